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
# sandbox's own disk; iproute2: the test suite's namespaced test hosts; skopeo and umoci: template
# builds from container images (`from_image`); libnss-myhostname: every program resolves *.localhost
# (domain mode's e2b.localhost) to loopback (its install enables it).
apt-get install -y -qq --no-install-recommends bubblewrap slirp4netns nftables mmdebstrap libseccomp2 ca-certificates \
    util-linux e2fsprogs iproute2 python3-venv skopeo umoci libnss-myhostname >/dev/null
if [ -n "$extras" ]; then
    # The test suite starts a container registry on loopback for the image pulls it tests, and drives
    # Debian's chromium for the browser tests (through Playwright: no browser download); certutil
    # (libnss3-tools) makes the NSS database through which that browser trusts domain mode's authority.
    apt-get install -y -qq --no-install-recommends docker-registry chromium libnss3-tools >/dev/null
    # The template tests serve a git repository to `git_clone` build steps.
    command -v git >/dev/null || apt-get install -y -qq --no-install-recommends git >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
echo "install.sh: installing the project into .venv" >&2
.venv/bin/pip install -q --disable-pip-version-check -e ".${extras}"
if [ -n "$extras" ]; then
    # The JS SDK and the E2B CLI, which the suite drives against e2b-local too (they need Node 20.18+).
    if command -v npm >/dev/null && node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a==20&&b>=18)?0:1)'; then
        echo "install.sh: installing the JS SDK and the E2B CLI into tests/js" >&2
        npm ci --prefix tests/js --no-audit --no-fund --silent
    else
        echo "install.sh: no Node 20.18+ with npm: the JS SDK and E2B CLI tests will be skipped" >&2
    fi
fi
# On PATH for every shell (the README's commands run as written), unless something else has the name.
link=/usr/local/bin/e2b-local
if [ -d /usr/local/bin ] && { [ ! -e "$link" ] || [ -L "$link" ]; }; then
    ln -sfn "$PWD/.venv/bin/e2b-local" "$link"
    echo "install.sh: done; e2b-local is on PATH ($link -> $PWD/.venv/bin/e2b-local)" >&2
else
    echo "install.sh: done; e2b-local is $PWD/.venv/bin/e2b-local (add $PWD/.venv/bin to PATH)" >&2
fi
