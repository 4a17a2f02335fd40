#!/bin/sh
# Installs, from the distribution's own packages (Debian, Ubuntu), what the MySQL module
# needs beyond pip: MariaDB's server, which its tests and benchmark start privately in a
# temporary directory (never as a system service), and what pip needs to build the
# driver mysqlclient (the MariaDB client library's headers, pkg-config, a C compiler,
# Python's own headers).
# Installs only what is missing, and nothing at all when everything is there, so CI can
# run it on every build. Needs root (CI runs as root; on a workstation, use sudo). No
# system server is started or enabled by this script.
set -eu

missing=""
if ! command -v mariadbd >/dev/null 2>&1 && [ ! -x /usr/sbin/mariadbd ]; then
    missing="$missing mariadb-server"
fi
if ! pkg-config --exists libmariadb 2>/dev/null; then
    missing="$missing libmariadb-dev pkg-config"
fi
if ! command -v cc >/dev/null 2>&1; then
    missing="$missing gcc"
fi
# mysqlclient has no Linux wheel: it compiles against the headers of the Python that
# creates the virtual environment (a distribution's python3 ships them apart).
include=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])' 2>/dev/null || true)
if [ -n "$include" ] && [ ! -f "$include/Python.h" ]; then
    missing="$missing python3-dev"
fi
[ -z "$missing" ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-mariadb.sh: no apt-get here; install with your distribution's package" \
        "manager:$missing (MariaDB's server, its client library's headers)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# shellcheck disable=SC2086 # one word per package
apt-get install -y -q --no-install-recommends $missing
