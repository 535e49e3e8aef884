#!/usr/bin/env bash
# System packages the tests use: ffmpeg (video checks), chromium (browser end-to-end tests), espeak-ng and sox
# (speech fixtures), janus and janus-demos (the browser extension in Janus' VideoRoom demo). Installed only when
# running as root with apt-get (as in CI); elsewhere the tests that need them skip and say why.
set -uo pipefail
need=()
command -v ffmpeg >/dev/null || need+=(ffmpeg)
command -v chromium >/dev/null || need+=(chromium chromium-driver)
command -v espeak-ng >/dev/null || need+=(espeak-ng)
command -v sox >/dev/null || need+=(sox)
command -v janus >/dev/null || need+=(janus janus-demos)  # the extension's test in a third-party call page
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing system packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null \
    || echo "warning: could not install ${need[*]}; the tests that need them will skip"
else
  echo "note: not root, not installing ${need[*]}; the tests that need them will skip"
fi
exit 0
