#!/bin/sh
# What configure's options do to the compiler flags, checked on every
# `make check`: --enable-debug must give -O0 -g3 (not -g -O2) unless the
# user set CFLAGS, which always win. Runs configure --no-create in a scratch
# copy, so the build directory is untouched. Usage: check-configure.sh SRCDIR
srcdir=${1:-.}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/gochat-configure.XXXXXX") || exit 1
trap 'chmod -R u+w "$tmp"; rm -rf "$tmp"' EXIT
status=0

# cflags <args...>: the CFLAGS line of configure's summary.
cflags() {
	chmod -R u+w "$tmp" && rm -rf "$tmp/t" && mkdir -p "$tmp/t/master" &&
	cp "$srcdir/configure" "$tmp/t/" && cp -R "$srcdir/build-aux" "$tmp/t/" &&
	: > "$tmp/t/master/main.c" &&
	(cd "$tmp/t" && ./configure --no-create "$@" >out 2>&1) ||
	    { echo "check-configure: configure $* failed:" >&2;
	      tail -5 "$tmp/t/out" >&2; return 1; }
	sed -n 's/^ *CFLAGS: *//p' "$tmp/t/out"
}
expect() {	# expect <description> <flags> <want regex> <refuse regex>
	case " $2 " in *" $3 "*) ;; *) echo "check-configure: $1: no $3 in: $2" >&2
	    status=1 ;; esac
	case " $2 " in *" $4 "*) echo "check-configure: $1: $4 in: $2" >&2
	    status=1 ;; esac
}

f=$(unset CFLAGS; cflags --enable-debug) || exit 1
expect "--enable-debug" "$f" -O0 -O2
expect "--enable-debug" "$f" -g3 -O2
f=$(cflags --enable-debug CFLAGS=-O1) || exit 1
expect "--enable-debug CFLAGS=-O1" "$f" -O1 -O0
f=$(unset CFLAGS; cflags) || exit 1
expect "default" "$f" -O2 -O0
[ $status = 0 ] && echo "check-configure: --enable-debug and CFLAGS give the flags expected"
exit $status
