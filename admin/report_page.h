/*
 * report_page.h - admin/report.html, built into the binary.
 *
 * The build turns the file into a C array (cmake/embed.cmake), so the page
 * needs nothing on disk and always matches the API of the binary serving it.
 */
#ifndef TANDEM_REPORT_PAGE_H
#define TANDEM_REPORT_PAGE_H

#include <stddef.h>

extern const unsigned char report_page_html[];
extern const size_t report_page_html_len;

#endif /* TANDEM_REPORT_PAGE_H */
