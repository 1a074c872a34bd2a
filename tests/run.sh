#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what is missing
# (Dovecot for the IMAP tests, the Python test extras), checks the types
# with mypy, then runs pytest.
# Extra arguments go to pytest.  pytest's "no tests ran" (exit 5) fails too.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v dovecot >/dev/null 2>&1 && [ ! -x /usr/sbin/dovecot ]; then
  echo "tests/run.sh: installing Dovecot (dovecot-imapd) for the IMAP tests" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dovecot-imapd >/dev/null
fi

python3 -m pip install --quiet --disable-pip-version-check -e '.[test]'
python3 -m mypy
exec python3 -m pytest -q "$@"
