#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what is missing
# (Dovecot, formail and mutt from Debian, the Python test extras), checks the types
# with mypy, then runs pytest.
# Extra arguments go to pytest.  pytest's "no tests ran" (exit 5) fails too.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests drive: Dovecot for IMAP; chromium for the web front end; formail (procmail) and
# mutt write the mbox files that tests/test_mbox_formats.py reads
missing=()
command -v dovecot >/dev/null 2>&1 || [ -x /usr/sbin/dovecot ] || missing+=(dovecot-imapd)
command -v formail >/dev/null 2>&1 || missing+=(procmail)
command -v mutt >/dev/null 2>&1 || missing+=(mutt)
# Debian's chromium for the browser test of `crm serve` (tests/test_web_browser.py, driven by
# Playwright's Python API; Playwright's own browser download is never used)
[ -x /usr/bin/chromium ] || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  echo "tests/run.sh: installing ${missing[*]} for the tests" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

python3 -m pip install --quiet --disable-pip-version-check -e '.[test]'
# mypy sees the package under its installed name, through a link called crm_bridge
typecheck=$(mktemp -d)
ln -s "$PWD" "$typecheck/crm_bridge"
(cd "$typecheck" && python3 -m mypy --config-file "$OLDPWD/pyproject.toml" --cache-dir "$OLDPWD/.mypy_cache" -p crm_bridge)
rm -rf "$typecheck"
exec python3 -m pytest -q "$@"
