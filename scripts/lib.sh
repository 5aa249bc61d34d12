# shellcheck shell=bash
# Helpers shared by scripts/services, scripts/test and scripts/run. Sourced, never executed.
#
# Contract: defines functions and SLOTCAST_ROOT only; changes no shell options, starts nothing,
# exports nothing. Every wait here is bounded.

# shellcheck disable=SC2034 # used by the scripts that source this file
SLOTCAST_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# `say WHAT TEXT`: one aligned status line, e.g. "postgres   running on 127.0.0.1:5432".
say() { printf '%-10s %s\n' "$1" "${*:2}"; }

# `stage TEXT`: the one header line per stage of scripts/test and scripts/run.
stage() { printf '\n==> %s\n' "$*"; }

warn() { printf 'WARNING: %s\n' "$*" >&2; }

die() {
  printf '\nERROR: %s\n' "$*" >&2
  exit 1
}

# Run a command as root: directly when we are root, else through sudo.
as_root() {
  if ((EUID == 0)); then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    die "need root for: $* (run as root or install sudo)"
  fi
}

# `tcp_open HOST PORT`: true when something accepts TCP connections there (2 s bound).
tcp_open() {
  # shellcheck disable=SC2016 # $1 and $2 belong to the inner bash
  timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}

# `wait_until SECONDS WHAT CMD...`: run CMD every half second until it succeeds or SECONDS
# pass. Returns CMD's success; says nothing (callers decide how loud a timeout is).
wait_until() {
  local limit=$1 what=$2
  shift 2
  local deadline=$((SECONDS + limit))
  until "$@"; do
    if ((SECONDS >= deadline)); then
      warn "gave up after ${limit}s waiting for ${what}"
      return 1
    fi
    sleep 0.5
  done
}
