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
