/*
 * replay_main.c - run a libFuzzer harness over kept inputs without libFuzzer.
 *
 * Usage: replay_fuzz_x DIR_OR_FILE...  Each regular file is fed once to
 * LLVMFuzzerTestOneInput.  A crash fails the ctest; a missing directory is
 * not an error (a harness may have no kept inputs yet).
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int
replay_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return -1;
    uint8_t *buf = malloc(1 << 20);
    if (buf == NULL) {
        fclose(f);
        return -1;
    }
    size_t n = fread(buf, 1, 1 << 20, f);
    fclose(f);
    LLVMFuzzerTestOneInput(buf, n);
    free(buf);
    return 0;
}

int
main(int argc, char **argv)
{
    int replayed = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0)
            continue;
        if (S_ISREG(st.st_mode)) {
            replayed += replay_file(argv[i]) == 0;
            continue;
        }
        DIR *dir = opendir(argv[i]);
        if (dir == NULL)
            continue;
        struct dirent *de;
        while ((de = readdir(dir)) != NULL) {
            char path[4096];
            if (de->d_name[0] == '.')
                continue;
            snprintf(path, sizeof(path), "%s/%s", argv[i], de->d_name);
            if (stat(path, &st) == 0 && S_ISREG(st.st_mode))
                replayed += replay_file(path) == 0;
        }
        closedir(dir);
    }
    printf("replayed %d inputs\n", replayed);
    return 0;
}
