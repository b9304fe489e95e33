#!/bin/sh
# The include boundaries of DESIGN.md, checked on every `make check`:
# each third-party library has one wrapper file, process folders do not
# include each other, common/ includes no process folder.
status=0
fail() { echo "boundary: $*" >&2; status=1; }

only() {	# only <header regex> <allowed file>...
	pat=$1; shift
	for f in $(grep -lE "#include[[:space:]]*<($pat)" common/*.[ch] \
	    master/*.[ch] workers/*.[ch] hub/*.[ch] 2>/dev/null); do
		ok=0
		for a in "$@"; do [ "$f" = "$a" ] && ok=1; done
		[ $ok = 1 ] || fail "$f includes $pat (only $* may)"
	done
}
only 'libpq-fe\.h' common/db.c
only 'hiredis/' common/bus.c
only 'jsmn\.h' common/json.c
only 'wslay/' workers/ws.c
only 'libscrypt\.h' workers/passwd.c
only 'http_parser\.h' workers/http.c

forbid() {	# forbid <description> <include regex> <files>...
	what=$1; pat=$2; shift 2
	for f in $(grep -lE "#include[[:space:]]*\"($pat)" "$@" 2>/dev/null); do
		fail "$f: $what"
	done
}
forbid "common/ includes a process folder" 'workers|hub|master/' common/*.[ch]
forbid "workers/ includes hub/" 'hub/' workers/*.[ch]
forbid "hub/ includes workers/" 'workers/' hub/*.[ch]
forbid "master/ touches workers/, hub/, Redis or PostgreSQL" \
    'workers/|hub/|common/db\.h|common/bus\.h' master/*.[ch]
exit $status
