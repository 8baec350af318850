# Dockerfile - tandem on Debian 12, in two stages:
#   build    the -dev packages and cmake; builds build/tandem
#   runtime  the shared libraries it links, a non-root user, the binary
#
#   docker build -t tandem:dev .
#   docker run --rm -v $PWD/my.conf:/etc/tandem/tandem.conf:ro tandem:dev
# docker-compose.yml mounts deploy/compose/tandem.conf there.

FROM debian:12 AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config \
      libevent-dev libssl-dev libpq-dev libhiredis-dev libjansson-dev \
      libpg-query-dev libxxhash-dev postgresql-server-dev-15 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTANDEM_TESTS=OFF -DTANDEM_WERROR=ON \
 && cmake --build build -j"$(nproc)" --target tandem \
 && strip --strip-debug build/tandem

FROM debian:12-slim AS runtime
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates libevent-core-2.1-7 libevent-extra-2.1-7 libevent-pthreads-2.1-7 \
      libevent-openssl-2.1-7 \
      libssl3 libpq5 libhiredis0.14 libjansson4 libpg-query1504.0 libxxhash0 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin tandem \
 && mkdir -p /etc/tandem
COPY --from=build /src/build/tandem /usr/local/bin/tandem
USER tandem
EXPOSE 6432 9090
ENTRYPOINT ["/usr/local/bin/tandem"]
CMD ["-c", "/etc/tandem/tandem.conf"]
