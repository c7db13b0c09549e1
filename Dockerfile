# Dockerfile - the strictrelay container image.
#
# Build stage (debian:12): etc/install.sh, the same install procedure as in
# README.md "Installing", into a staging directory (DESTDIR). Runtime stage
# (debian:12-slim): the runtime libraries only, the staged files, the
# strictrelay user. The container starts as root so the relay can bind 25,
# 465 and 587 and make the volume its own; the relay then switches to the
# strictrelay user ([server] user = strictrelay in the shipped config).
#
#   docker build -t strictrelay .
#   docker run -d --name relay -p 25:25 -v strictrelay-queue:/var/lib/strictrelay \
#       -e STRICTRELAY_SERVER_HOSTNAME=relay.example.org strictrelay
#
# Configure with STRICTRELAY_<SECTION>_<KEY> variables (see README.md
# "Running in Docker"); etc/docker-entrypoint.sh prepares and starts it.

FROM debian:12 AS build
WORKDIR /src
COPY . .
RUN DESTDIR=/staging BUILD=/tmp/build-release etc/install.sh --sendmail-link

FROM debian:12-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libuv1 libssl3 libc-ares2 libcurl4 libsqlite3-0 zlib1g openssl ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /staging/ /
# The setup step of etc/install.sh on the live image: the strictrelay user,
# /var/lib/strictrelay owned by it, /etc/strictrelay/tls (the config came
# with the staged files and is kept).
COPY etc/install.sh /tmp/install.sh
RUN /tmp/install.sh --setup-only && rm /tmp/install.sh \
 && strictrelay --version \
 && ! ldd /usr/local/bin/strictrelay | grep 'not found'
COPY etc/docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh

VOLUME /var/lib/strictrelay
EXPOSE 25 465 587
HEALTHCHECK --interval=30s --timeout=15s --start-period=20s --retries=3 \
  CMD ["/usr/local/bin/docker-entrypoint.sh", "healthcheck"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD ["serve"]
