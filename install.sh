#!/usr/bin/env bash
# Installs what e2b-local needs on Debian or Ubuntu: the system packages (as root, through apt) and a
# virtualenv in .venv with the project. `--test` adds the test tools and the `agent` extra (anthropic, mcp)
# that the skill's claude_agent.py and mcp_server.py need. Re-runs are cheap.
set -euo pipefail
cd "$(dirname "$0")"

if [ "$(id -u)" -ne 0 ]; then
    # Sandboxes need root on the host (cgroups, mounts, user-namespace maps).
    exec sudo -E bash "$0" "$@"
fi

extras=""
[ "${1:-}" = "--test" ] && extras="[agent,test]"

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "install.sh: Python 3.11 or newer is required (found $("$python" --version 2>&1))" >&2
    exit 1
fi

echo "install.sh: installing system packages (bubblewrap, slirp4netns, nftables, mmdebstrap, ...)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# util-linux: setpriv, which starts each sandbox's network stack unprivileged; e2fsprogs: each
# sandbox's own disk; iproute2: the test suite's namespaced test hosts.
apt-get install -y -qq --no-install-recommends bubblewrap slirp4netns nftables mmdebstrap libseccomp2 ca-certificates \
    util-linux e2fsprogs iproute2 python3-venv >/dev/null
if [ -n "$extras" ]; then
    # The dashboard's browser tests drive Debian's chromium (through Playwright: no browser download).
    apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
echo "install.sh: installing the project into .venv" >&2
.venv/bin/pip install -q --disable-pip-version-check -e ".${extras}"
# On PATH for every shell (the README's commands run as written), unless something else has the name.
link=/usr/local/bin/e2b-local
if [ -d /usr/local/bin ] && { [ ! -e "$link" ] || [ -L "$link" ]; }; then
    ln -sfn "$PWD/.venv/bin/e2b-local" "$link"
    echo "install.sh: done; e2b-local is on PATH ($link -> $PWD/.venv/bin/e2b-local)" >&2
else
    echo "install.sh: done; e2b-local is $PWD/.venv/bin/e2b-local (add $PWD/.venv/bin to PATH)" >&2
fi
