#!/usr/bin/env bash
# Build and smoke-test mover's image from ./Dockerfile where no container registry is reachable
# (python:3.11-slim-bookworm cannot be pulled) but Debian's mirror and PyPI are: the base image
# is made from Debian bookworm packages with debootstrap instead. Run as root, daemonless:
#
#     sudo bash scripts/build_image_offline.sh [TAG]        # default TAG: mover:test
#
# The base provides what the Dockerfile uses of the official image: `python` (a symlink to
# Debian's python3.11), `python -m pip` (Debian's pip, with the EXTERNALLY-MANAGED marker
# removed, as the official image has none), Python's headers for the Cython build, apt.
# Podman's storage is vfs and builds use chroot isolation: no overlay mounts, no user
# namespaces, no daemon needed. Runs use runc with lowered rlimits: crun 1.8 refuses a host
# with hybrid cgroups, and raising an rlimit needs CAP_SYS_RESOURCE, which sandboxes often drop.
set -euo pipefail
cd "$(dirname "$0")/.."

tag="${1:-mover:test}"
base="localhost/mover-base:bookworm"
work="${MOVER_IMAGE_WORK:-/var/tmp/mover-image}"
podman=(podman --storage-driver vfs)
run=("${podman[@]}" --runtime runc run --rm --ulimit nofile=4096:4096 --ulimit nproc=4096:4096)

missing=()
for tool in podman buildah debootstrap runc; do
    command -v "${tool}" >/dev/null || missing+=("${tool}")
done
if ((${#missing[@]})); then
    echo "installing: ${missing[*]}"
    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
fi

if ! "${podman[@]}" image exists "${base}"; then
    echo "making ${base} with debootstrap"
    rm -rf "${work}/rootfs"
    mkdir -p "${work}"
    debootstrap --variant=minbase \
        --include=python3,python3-pip,libpython3.11-dev,ca-certificates \
        bookworm "${work}/rootfs" http://deb.debian.org/debian
    ln -sf /usr/bin/python3 "${work}/rootfs/usr/local/bin/python"
    rm -f "${work}"/rootfs/usr/lib/python3.*/EXTERNALLY-MANAGED
    rm -rf "${work}"/rootfs/var/lib/apt/lists/* "${work}"/rootfs/var/cache/apt/archives/*.deb
    tar -C "${work}/rootfs" -cf "${work}/base.tar" .
    "${podman[@]}" import --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' \
        "${work}/base.tar" "${base}"
    rm -rf "${work}/rootfs" "${work}/base.tar"
fi

# The host's CA bundle is lent to the build's RUN steps (not copied into a layer), so that pip
# works behind a TLS-intercepting proxy whose CA only the host trusts.
ca=()
if [[ -f /etc/ssl/certs/ca-certificates.crt ]]; then
    ca=(-v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro)
fi
time "${podman[@]}" build --isolation chroot --network host "${ca[@]}" \
    --build-arg PYTHON_IMAGE="${base}" -t "${tag}" .

"${podman[@]}" images "${tag}"
"${run[@]}" "${tag}" --help
"${run[@]}" --entrypoint id "${tag}"
[[ "$("${run[@]}" --entrypoint id "${tag}" -u)" == 10001 ]] || { echo "not uid 10001" >&2; exit 1; }
"${run[@]}" "${tag}" benchmark --size 16MiB --min-time 0.1 --json
