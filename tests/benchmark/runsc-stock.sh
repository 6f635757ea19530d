#!/bin/sh
# gVisor behind containerd's stock runc shim (runtime options BinaryName = this script), the baseline of
# `make bench-quark`: how gVisor runs without a sandboxer and without gVisor's own shim (Debian packages none).
# Three adaptations, each because the runc shim expects runc's behaviour:
#  - every container is a gVisor sandbox of its own (the pause container too): with CRI's annotations runsc would put
#    a pod's containers into one sandbox, and report the sandbox's pid for each, a pid the runc shim waits on and
#    which never exits while the pod lives, so no container would ever be seen exiting;
#  - host networking (--network=host): the shim cannot apply the netstack workaround this kernel needs
#    (google/gvisor#10704); kuasar-quark is measured with --network host too;
#  - `kill` of a container whose sandbox has ended says "container not running", as runc does, which the shim
#    treats as done (runsc says "sandbox is not running", exit 128, and containerd then retries the exit forever).
# RUNSC: the runsc binary (default /var/lib/kuasar/runsc/runsc).
RUNSC=${RUNSC:-/var/lib/kuasar/runsc/runsc}
prev=""
kill=""
for a in "$@"; do
  if [ "$prev" = "--bundle" ]; then
    sed -i -e 's/"io\.kubernetes\.cri\.container-type"/"io.kuasar.bench.container-type"/' \
      -e 's/"io\.kubernetes\.cri\.sandbox-id"/"io.kuasar.bench.sandbox-id"/' "$a/config.json"
  fi
  [ "$a" = kill ] && kill=1
  prev=$a
done
if [ -z "$kill" ]; then
  exec "$RUNSC" --network=host "$@"
fi
err=$("$RUNSC" --network=host "$@" 2>&1 >/dev/null)
rc=$?
if [ $rc -ne 0 ] && echo "$err" | grep -q "is not running"; then
  echo "container not running" >&2
  exit 1
fi
[ -n "$err" ] && echo "$err" >&2
exit $rc
