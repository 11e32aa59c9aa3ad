#!/usr/bin/env bash
# Installs the Debian packages that training the default models needs (tools/train/) on top
# of deploy/install-deps.sh: PyTorch and SentencePiece. Neither the product nor CI needs them.
# Idempotent and non-interactive; run as root (or through sudo).
set -euo pipefail

packages=(
  python3 python3-numpy python3-torch python3-sentencepiece
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-train-deps: all ${#packages[@]} packages already installed"
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "install-train-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
