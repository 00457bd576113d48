# Sourced by the scripts: create the virtualenv if needed and install the project.
#   ensure_venv EXTRAS    (e.g. "test" or "http")
# PYTHON (default python3) creates it; VENV (default .venv) is where.
python=${PYTHON:-python3}
venv=${VENV:-.venv}

ensure_venv() {
    if [ ! -x "$venv/bin/python" ]; then
        "$python" -m venv "$venv"
    fi
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e ".[$1]"
}

# ensure_system_tools: the servers the tests start themselves (redis-server, nginx),
# installed with apt-get where they are missing and apt-get can (root, or sudo
# without a password); otherwise say what to install and go on (their tests fail
# with the same advice).
ensure_system_tools() {
    local missing=()
    command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
    command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo_=
    if [ "$(id -u)" != 0 ]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
            sudo_=sudo
        else
            echo "== missing: ${missing[*]}; install them (apt-get install ${missing[*]}): their tests fail without" >&2
            return 0
        fi
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "== missing: ${missing[*]}, and no apt-get here: install them by hand" >&2
        return 0
    fi
    echo "== installing ${missing[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    $sudo_ apt-get update -qq || true
    $sudo_ apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # The packages' own install scripts may start the system services: stop them,
    # the tests start their own on free ports.
    for service in redis-server nginx; do
        if command -v service >/dev/null 2>&1; then
            $sudo_ service "$service" stop >/dev/null 2>&1 || true
        fi
    done
}
