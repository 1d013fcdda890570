#!/usr/bin/env bash
# The CPU image, proved without a Docker engine: Debian 12 imported from debootstrap, the
# repository's Dockerfile built by podman (chroot isolation, vfs storage), then the built image
# mounted and its server run with chroot as the image's user: the image's own HEALTHCHECK
# command must answer SERVING and /metrics must answer, the image's sinkserve-bench must run a
# 2-turn load against it, then SIGTERM must drain to exit 0. Then the server again under TLS:
# the same HEALTHCHECK command passes with SINKSERVE_TLS_CA set, and fails without it.
#   tests/deploy/image_test.sh SOURCE_DIR WORK_DIR
# WORK_DIR keeps the debootstrap tarball and podman's storage between runs (the base is built
# once; the build stage reruns when the sources change).
set -euo pipefail
source_dir=$(realpath "$1")
work=$(mkdir -p "$2" && realpath "$2")
podman=(podman --root "$work/storage" --runroot "$work/run" --storage-driver vfs
        --cgroup-manager cgroupfs --events-backend none)
base=localhost/debian:bookworm-debootstrap
image=localhost/sinkserve:cpu-test

if [[ ! -f "$work/bookworm.tar" ]]; then
  rm -rf "$work/rootfs"
  debootstrap --variant=minbase bookworm "$work/rootfs" http://deb.debian.org/debian >"$work/debootstrap.log"
  tar -C "$work/rootfs" -cf "$work/bookworm.tar.partial" .
  mv "$work/bookworm.tar.partial" "$work/bookworm.tar"
  rm -rf "$work/rootfs"
fi
if ! "${podman[@]}" image exists "$base"; then
  "${podman[@]}" import "$work/bookworm.tar" "$base"
fi

start=$SECONDS
# Docker's image format: OCI images have no HEALTHCHECK.
"${podman[@]}" build --format docker --isolation chroot --network host --pull=never \
  --build-arg BASE_IMAGE="$base" --build-arg RUNTIME_IMAGE="$base" \
  -t "$image" -f "$source_dir/Dockerfile" "$source_dir"
echo "image_test: built $image in $((SECONDS - start)) s"

# The image's configuration, as `docker run` will read it.
config=$("${podman[@]}" image inspect "$image" --format \
  '{{.Config.User}}|{{json .Config.ExposedPorts}}|{{json .Config.Volumes}}|{{json .Config.Entrypoint}}|{{json .Config.Cmd}}|{{json .HealthCheck.Test}}')
echo "image_test: config $config"
IFS='|' read -r user ports volumes entrypoint cmd healthcheck <<<"$config"
[[ $user == 10001:10001 ]]
[[ $ports == *'"50051/tcp"'* && $ports == *'"9464/tcp"'* && $ports == *'"8000/tcp"'* ]]
[[ $volumes == *'"/models"'* ]]
[[ $entrypoint == '["/usr/local/bin/sinkserve"]' && $cmd == '["serve"]' ]]
[[ $healthcheck == '["CMD","/usr/local/bin/sinkserve","health","--address","127.0.0.1:50051"]' ]]

root=$("${podman[@]}" image mount "$image")
server_pid=
cleanup() {
  if [[ -n $server_pid ]]; then kill -KILL "$server_pid" 2>/dev/null || true; fi
  umount "$root/proc" "$root/dev" "$root/mnt" 2>/dev/null || true
  "${podman[@]}" image unmount "$image" >/dev/null || true
}
trap cleanup EXIT
mount -t proc proc "$root/proc"
mount --bind /dev "$root/dev"
# The image's entrypoint and default command (serve), as its user, on ports of our own.
read -r grpc_port metrics_port < <(python3 -c '
import socket
sockets = [socket.socket() for _ in range(2)]
for s in sockets: s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in sockets))')
chroot --userspec=10001:10001 "$root" /usr/local/bin/sinkserve serve --host 127.0.0.1 \
  --port "$grpc_port" --metrics-port "$metrics_port" --http-port -1 --threads 1 --grace-period-s 5 \
  >"$work/server.log" 2>&1 &
server_pid=$!
healthy=
for _ in $(seq 1 60); do
  if chroot --userspec=10001:10001 "$root" /usr/local/bin/sinkserve health \
       --address "127.0.0.1:$grpc_port" >"$work/health.out" 2>&1; then
    healthy=1
    break
  fi
  sleep 1
done
[[ -n $healthy ]] || { cat "$work/server.log" "$work/health.out"; exit 1; }
echo "image_test: health $(cat "$work/health.out")"
metrics=$(python3 -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:$metrics_port/metrics').read().decode())")
grep -q '^sinkserve_model_info{' <<<"$metrics"
chroot --userspec=10001:10001 "$root" /usr/local/bin/sinkserve-bench load \
  --target "127.0.0.1:$grpc_port" --requests 2 --turns 2 --max-new-tokens 4 --warmup 0 \
  >"$work/bench.out" 2>&1 || { cat "$work/bench.out"; exit 1; }
grep -q 'Successful requests: *4' "$work/bench.out"
kill -TERM "$server_pid"
wait "$server_pid"
server_pid=
grep -q '"stopped"\|stopped' "$work/server.log"

# TLS: a certificate for localhost (not 127.0.0.1, as a real one would name a host), mounted
# at /mnt; the HEALTHCHECK's command line is fixed, the environment configures it.
rm -rf "$work/tls" && mkdir -p "$work/tls"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost -keyout "$work/tls/key.pem" -out "$work/tls/cert.pem" \
  2>"$work/tls/openssl.log"
chmod a+r "$work/tls"/*.pem
mount --bind "$work/tls" "$root/mnt"
chroot --userspec=10001:10001 "$root" /usr/local/bin/sinkserve serve --host 127.0.0.1 \
  --port "$grpc_port" --metrics-port "$metrics_port" --threads 1 --grace-period-s 5 \
  --tls-cert /mnt/cert.pem --tls-key /mnt/key.pem >"$work/server-tls.log" 2>&1 &
server_pid=$!
health_tls() {  # the image's HEALTHCHECK command on our port, with the environment given
  chroot --userspec=10001:10001 "$root" env "$@" /usr/local/bin/sinkserve health \
    --address "127.0.0.1:$grpc_port" >"$work/health-tls.out" 2>&1
}
healthy=
for _ in $(seq 1 60); do
  if health_tls SINKSERVE_TLS_CA=/mnt/cert.pem SINKSERVE_TLS_SERVER_NAME=localhost; then
    healthy=1
    break
  fi
  sleep 1
done
[[ -n $healthy ]] || { cat "$work/server-tls.log" "$work/health-tls.out"; exit 1; }
if health_tls; then echo "image_test: plaintext health passed against TLS"; exit 1; fi
kill -TERM "$server_pid"
wait "$server_pid"
server_pid=
echo "image_test: passed (SERVING, /metrics, sinkserve-bench, SIGTERM exit 0; TLS health)"
