# GoChat container image. NOT exercised by CI: no container engine runs
# there, so this file is kept minimal and mirrors .ci/deps (the build
# packages only) and the Debian 12 runtime libraries. Keep them in step.
#
#   docker build -t gochat .
#   docker compose up          # with PostgreSQL and Redis: see compose.yaml
#
# Configure with GOCHAT_<KEY> environment variables (GOCHAT_DATABASE_URL,
# GOCHAT_REDIS_URL, ...) or mount a file over /etc/gochat.conf.

FROM debian:bookworm-slim AS build
RUN apt-get update -q && \
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
	build-essential autoconf automake autoconf-archive libtool pkg-config \
	libevent-dev libhiredis-dev libpq-dev libssl-dev libwslay-dev \
	libscrypt-dev libjsmn-dev libhttp-parser-dev libjemalloc-dev && \
    rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN ./autogen.sh && \
    ./configure --prefix=/usr --sysconfdir=/etc --localstatedir=/var && \
    make -j"$(nproc)" && \
    make install DESTDIR=/out

FROM debian:bookworm-slim
# What gochat links against (readelf -d): libevent_core, hiredis 0.14,
# libpq, libcrypto (libssl3), wslay, libscrypt, http-parser, jemalloc.
RUN apt-get update -q && \
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
	libevent-core-2.1-7 libhiredis0.14 libpq5 libssl3 libwslay1 \
	libscrypt0 libhttp-parser2.9 libjemalloc2 && \
    rm -rf /var/lib/apt/lists/* && \
    useradd --system --user-group --no-create-home --home-dir /nonexistent \
	--shell /usr/sbin/nologin gochat
COPY --from=build /out/usr/sbin/gochat /usr/sbin/gochat
COPY --from=build /out/usr/share/gochat /usr/share/gochat
COPY --from=build /out/etc/gochat.conf /etc/gochat.conf
# Fail the build, not the start, if a library is missing.
RUN ! ldd /usr/sbin/gochat | grep 'not found' && /usr/sbin/gochat -v

# Not root from the start: the `user` key is not needed, and logs go to
# standard error (docker logs).
USER gochat:gochat
ENV GOCHAT_LISTEN=0.0.0.0:8080
EXPOSE 8080
# GET /health answers 200 only when PostgreSQL and Redis both answer. The
# image has neither curl nor wget: bash (always in Debian) speaks HTTP/1.0
# through /dev/tcp with builtins only.
HEALTHCHECK --interval=30s --timeout=5s --start-period=40s --retries=3 \
    CMD ["/bin/bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /health HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && read -r _ code _ <&3 && [ \"$code\" = 200 ]"]
# TERM (docker stop) stops gracefully within 8 s; docker waits 10 s.
STOPSIGNAL SIGTERM
CMD ["/usr/sbin/gochat", "-c", "/etc/gochat.conf"]
