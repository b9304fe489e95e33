#!/bin/sh
# Generate ./configure from configure.ac (needs autoconf, automake,
# autoconf-archive and pkg-config).
set -e
cd "$(dirname "$0")"
autoreconf --install --force --warnings=all
