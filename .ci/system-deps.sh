#!/usr/bin/env bash
# Make sure headless OpenGL for MuJoCo is present: EGL (Mesa) and OSMesa as a fallback.
set -euo pipefail
have() { ldconfig -p 2>/dev/null | grep -q "$1"; }
missing=()
have 'libEGL.so.1' || missing+=(libegl1 libegl-mesa0 libgl1-mesa-dri)
have 'libOSMesa.so' || missing+=(libosmesa6)
if [ ${#missing[@]} -eq 0 ]; then echo "system-deps: EGL and OSMesa present"; exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "system-deps: installing ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "system-deps: missing ${missing[*]}; install them with your package manager (e.g. sudo apt-get install ${missing[*]})" >&2
  exit 1
fi
