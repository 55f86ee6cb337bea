#!/usr/bin/env bash
# Builds `w2sg` with the `cuda` feature on a machine without a GPU or a CUDA toolkit, to check that the
# GPU build compiles and links. The first run took 42 min here (2 loaded cores; candle's CUDA kernels
# are most of it), later ones seconds; not run in CI.
#
#   scripts/check-cuda-build.sh [VENV_DIR]        (default VENV_DIR: target/cuda-venv)
#
# 1. NVIDIA's compiler, headers and libraries come from PyPI into a venv: nvidia-cuda-nvcc (nvcc),
#    nvidia-cuda-runtime (cudart), nvidia-cuda-crt and nvidia-cuda-cccl (headers nvcc needs),
#    nvidia-cublas, nvidia-curand and nvidia-cuda-nvrtc (the libraries candle links).
# 2. libcuda.so belongs to the GPU driver, which a build machine need not have; like the CUDA toolkit's
#    lib64/stubs/libcuda.so, a stub with the same soname (libcuda.so.1) and every driver function
#    cudarc declares is compiled for linking only. At run time the driver's real libcuda.so.1 is used.
# 3. CUDA_COMPUTE_CAP=90 (H100/H200; override in the environment), CUDARC_CUDA_VERSION pinned to a
#    version cudarc 0.19 knows (it refuses newer minor versions than it was written for).
# 4. cargo build --release -p w2sg-cli --features w2sg-lm/cuda, then check that the binary links the
#    CUDA libraries. Running it on a GPU machine needs the venv's libraries on LD_LIBRARY_PATH (printed).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-target/cuda-venv}
PY=${PYTHON:-python3}

if [ ! -x "$VENV/bin/nvcc-ok" ]; then
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet nvidia-cuda-nvcc nvidia-cuda-runtime nvidia-cuda-crt nvidia-cuda-cccl \
    nvidia-cublas nvidia-curand nvidia-cuda-nvrtc
  touch "$VENV/bin/nvcc-ok"
fi
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
CUDA=$(ls -d "$SITE"/nvidia/cu1*/ | sort | tail -1)
CUDA=${CUDA%/}
[ -x "$CUDA/bin/nvcc" ] || { echo "error: no nvcc under $CUDA/bin" >&2; exit 1; }
export CUDA_ROOT="$CUDA" CUDA_PATH="$CUDA" CUDA_HOME="$CUDA" PATH="$CUDA/bin:$PATH"
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export CUDARC_CUDA_VERSION=${CUDARC_CUDA_VERSION:-13040}
nvcc --version | tail -2

# Unversioned names for the linker (the wheels ship only libX.so.MAJOR).
LIBS="$VENV/cuda-link"
mkdir -p "$LIBS"
for lib in cudart cublas cublasLt curand nvrtc; do
  so=$(ls "$CUDA"/lib/lib$lib.so.* 2>/dev/null | sort | head -1 || true)
  [ -n "$so" ] || { echo "error: lib$lib.so.* not found in $CUDA/lib" >&2; exit 1; }
  ln -sf "$so" "$LIBS/lib$lib.so"
done

# The driver stub: every cu* function cudarc's driver bindings declare.
cargo fetch --quiet
CUDARC=$(cargo metadata --format-version 1 --features w2sg-lm/cuda | "$VENV/bin/python" -c '
import json, sys
m = json.load(sys.stdin)
print(next(p["manifest_path"] for p in m["packages"] if p["name"] == "cudarc").rsplit("/", 1)[0])')
grep -rhoE '\bfn cu[A-Za-z0-9_]+\(' "$CUDARC/src/driver/sys" | sed -E 's/^fn (.*)\($/\1/' | sort -u \
  | awk '{print "void " $1 "(void) {}"}' > "$LIBS/libcuda_stub.c"
[ -s "$LIBS/libcuda_stub.c" ] || { echo "error: no driver functions found in $CUDARC/src/driver/sys" >&2; exit 1; }
cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$LIBS/libcuda.so" "$LIBS/libcuda_stub.c"
echo "libcuda stub: $(wc -l < "$LIBS/libcuda_stub.c") functions"

export RUSTFLAGS="${RUSTFLAGS:-} -L native=$LIBS"
# A separate target dir: the cuda feature changes candle's build, and must not invalidate the CPU one.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/cuda}
cargo build --release -p w2sg-cli --features w2sg-lm/cuda
BIN="$CARGO_TARGET_DIR/release/w2sg"
# (nvrtc and cublasLt are linked as needed, i.e. dropped when unused.)
for lib in libcuda.so.1 libcudart.so libcublas.so libcurand.so; do
  readelf -d "$BIN" | grep -q "NEEDED.*${lib}" || { echo "error: $BIN does not link $lib" >&2; exit 1; }
done
# The binary loads with the venv's libraries (and the stub in place of the driver: nothing calls it).
mkdir -p "$LIBS/run"
ln -sf ../libcuda.so "$LIBS/run/libcuda.so.1"
LD_LIBRARY_PATH="$CUDA/lib:$LIBS/run" "$BIN" --help >/dev/null
echo "ok: $BIN built with the cuda feature (compute capability $CUDA_COMPUTE_CAP)"
echo "to run it on a GPU machine: LD_LIBRARY_PATH=$CUDA/lib $BIN lm features --device cuda ..."
