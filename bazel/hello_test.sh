#!/bin/sh
# //:hello_test: runs //:hello (a runfile; the test starts in the runfiles
# tree of this workspace) and checks what it prints.
set -eu
out=$(./hello)
if [ "$out" != "Hello, reap!" ]; then
    echo "hello printed '$out', expected 'Hello, reap!'" >&2
    exit 1
fi
echo "hello_test: ok"
