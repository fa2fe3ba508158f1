#!/usr/bin/env bash
# Installs what e2b-local needs on Debian or Ubuntu: the system packages (as root, through apt) and a
# virtualenv in .venv with the project. `--test` adds the test tools. Re-runs are cheap.
set -euo pipefail
cd "$(dirname "$0")"

if [ "$(id -u)" -ne 0 ]; then
    # Sandboxes need root on the host (cgroups, mounts, user-namespace maps).
    exec sudo -E bash "$0" "$@"
fi

extras=""
[ "${1:-}" = "--test" ] && extras="[test]"

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "install.sh: Python 3.11 or newer is required (found $("$python" --version 2>&1))" >&2
    exit 1
fi

echo "install.sh: installing system packages (bubblewrap, slirp4netns, nftables, mmdebstrap, ...)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# util-linux: setpriv, which starts each sandbox's network stack unprivileged; e2fsprogs: each
# sandbox's own disk; iproute2: the test suite's namespaced test hosts; libnss-myhostname: every
# program resolves *.localhost (domain mode's e2b.localhost) to loopback (its install enables it).
apt-get install -y -qq --no-install-recommends bubblewrap slirp4netns nftables mmdebstrap libseccomp2 ca-certificates \
    util-linux e2fsprogs iproute2 python3-venv libnss-myhostname >/dev/null

if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
echo "install.sh: installing the project into .venv" >&2
.venv/bin/pip install -q --disable-pip-version-check -e ".${extras}"
echo "install.sh: done" >&2
