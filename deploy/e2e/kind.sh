#!/usr/bin/env bash
# End-to-end smoke test on a real (kind) cluster: build the image, install the chart, give the
# worker simulated NVIDIA devices (no GPU needed), and check that a device pod is mutated by the
# webhook, scheduled by kube-scheduler + the hami extender, bound, and admitted through the
# agent's device plugin. Needs docker, kind, kubectl and helm. Usage:
#
#   deploy/e2e/kind.sh            # create cluster hami-e2e, test, keep it for inspection
#   KEEP=0 deploy/e2e/kind.sh     # delete the cluster afterwards
#
# Environment: CLUSTER (hami-e2e), IMAGE (hami:e2e), K8S_IMAGE (kindest/node image, default: kind's),
# BACKENDS (build argument, default "nvidia"), TIMEOUT (seconds per wait, 180).
set -euo pipefail

CLUSTER=${CLUSTER:-hami-e2e}
IMAGE=${IMAGE:-hami:e2e}
BACKENDS=${BACKENDS:-nvidia}
TIMEOUT=${TIMEOUT:-180}
NAMESPACE=hami-system
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORKER="${CLUSTER}-worker"

for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || { echo "kind.sh: '$tool' is not installed" >&2; exit 2; }
done

cleanup() { if [ "${KEEP:-1}" = 0 ]; then kind delete cluster --name "$CLUSTER"; fi; }
trap cleanup EXIT

echo "==> cluster $CLUSTER"
if ! kind get clusters | grep -qx "$CLUSTER"; then
  cat <<KIND | kind create cluster --name "$CLUSTER" ${K8S_IMAGE:+--image "$K8S_IMAGE"} --config -
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
nodes:
  - role: control-plane
  - role: worker
KIND
fi
kubectl config use-context "kind-$CLUSTER" >/dev/null

echo "==> image $IMAGE (backends: $BACKENDS)"
make -C "$ROOT" dist  # the image installs the wheels; its build context is dist/
docker build -f "$ROOT/deploy/docker/Dockerfile" --build-arg BACKENDS="$BACKENDS" -t "$IMAGE" "$ROOT/dist"
kind load docker-image "$IMAGE" --name "$CLUSTER"

echo "==> HAMi-core stand-in on $WORKER (empty libvgpu.so and ld.so.preload: the containers run unlimited)"
docker exec "$WORKER" sh -c 'mkdir -p /usr/local/vgpu && touch /usr/local/vgpu/libvgpu.so /usr/local/vgpu/ld.so.preload'
kubectl label node "$WORKER" hami.io/node=enabled --overwrite

echo "==> helm install"
values=$(mktemp)
cat > "$values" <<VALUES
image: {repository: ${IMAGE%:*}, tag: ${IMAGE##*:}, pullPolicy: Never}
agent:
  hamiCore: {enabled: false}  # simulated GPUs: the stand-in above, not HAMi's image (the agent reports them enforced)
  inventory:
    nodes:
      - name: $WORKER
        devices:
          - {vendor: NVIDIA, type: NVIDIA A100-SXM4-80GB, memory: 80Gi, count: 2}
VALUES
helm upgrade --install hami "$ROOT/deploy/helm/hami" --namespace "$NAMESPACE" --create-namespace -f "$values" --wait --timeout "${TIMEOUT}s"
kubectl -n "$NAMESPACE" rollout status daemonset/hami-agent --timeout "${TIMEOUT}s"

echo "==> the node registers its devices"
for _ in $(seq "$TIMEOUT"); do
  kubectl get node "$WORKER" -o jsonpath='{.metadata.annotations.hami\.io/node-nvidia-register}' | grep -q NVIDIA && break
  sleep 1
done
kubectl get node "$WORKER" -o jsonpath='{.metadata.annotations.hami\.io/node-nvidia-register}' | grep -q NVIDIA

echo "==> a pod asking for 1000 MiB of a GPU"
kubectl delete pod hami-e2e --ignore-not-found --wait
kubectl apply -f - <<POD
apiVersion: v1
kind: Pod
metadata: {name: hami-e2e}
spec:
  restartPolicy: Never
  containers:
    - name: main
      image: busybox:1.36
      command: ["sh", "-c", "env | grep -E 'NVIDIA|CUDA' ; sleep 5"]
      resources: {limits: {nvidia.com/gpumem: 1000}}
POD
test "$(kubectl get pod hami-e2e -o jsonpath='{.spec.schedulerName}')" = hami-scheduler   # the webhook
kubectl wait pod/hami-e2e --for=condition=PodScheduled --timeout "${TIMEOUT}s"
test "$(kubectl get pod hami-e2e -o jsonpath='{.spec.nodeName}')" = "$WORKER"
kubectl wait pod/hami-e2e --for=jsonpath='{.metadata.annotations.hami\.io/bind-phase}'=success --timeout "${TIMEOUT}s"
kubectl wait pod/hami-e2e --for=jsonpath='{.status.phase}'=Succeeded --timeout "${TIMEOUT}s"
kubectl logs hami-e2e | grep -q CUDA_DEVICE_MEMORY_LIMIT

echo "==> a pod that no card can hold stays Pending with the extender's reason"
kubectl apply -f "$ROOT/deploy/examples/nvidia-too-large.yaml"
sleep 10
test "$(kubectl get pod gpu-too-large -o jsonpath='{.status.phase}')" = Pending
kubectl get events --field-selector involvedObject.name=gpu-too-large -o jsonpath='{.items[*].message}' | grep -q CardInsufficientMemory

echo "==> metrics"
kubectl -n "$NAMESPACE" port-forward svc/hami-scheduler 18443:443 >/dev/null 2>&1 &
forward=$!
sleep 3
curl -sk https://127.0.0.1:18443/metrics | grep -q '^hami_gpu_memory_allocated_bytes'
kill "$forward"

echo "e2e passed"
