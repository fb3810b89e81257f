#!/bin/sh
# Installs the C interface of smyrf under PREFIX (default /usr/local):
#   PREFIX/include/smyrf.h
#   PREFIX/lib/libsmyrf.so.X.Y.Z, libsmyrf.so.X -> (the SONAME), libsmyrf.so -> libsmyrf.so.X
#   PREFIX/lib/libsmyrf.a
#   PREFIX/lib/pkgconfig/smyrf.pc
# Build first: cargo build --release && scripts/install.sh /usr/local
#
# Environment:
#   LIBDIR     where cargo put the libraries (default $CARGO_TARGET_DIR/release, else
#              target/release in the repository)
#   DESTDIR    staging root for packagers: files go to $DESTDIR$PREFIX, smyrf.pc names PREFIX
#   LIBSUBDIR  library directory under PREFIX (default lib; e.g. lib64, lib/x86_64-linux-gnu)
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
prefix=${1:-/usr/local}
case $prefix in
/*) ;;
*) echo "install.sh: PREFIX must be an absolute path, got '$prefix'" >&2; exit 2 ;;
esac
src=${LIBDIR:-${CARGO_TARGET_DIR:-$root/target}/release}
header=$root/include/smyrf.h
libsub=${LIBSUBDIR:-lib}
dest=${DESTDIR:-}$prefix

for file in "$header" "$src/libsmyrf.so" "$src/libsmyrf.a"; do
    if [ ! -f "$file" ]; then
        echo "install.sh: $file is missing; run 'cargo build --release' first (or set LIBDIR)" >&2
        exit 1
    fi
done

# The version and the SONAME major come from the header, which matches the library.
macro() { sed -n "s/^#define SMYRF_VERSION_$1 \([0-9][0-9]*\)\$/\1/p" "$header"; }
major=$(macro MAJOR)
minor=$(macro MINOR)
patch=$(macro PATCH)
if [ -z "$major" ] || [ -z "$minor" ] || [ -z "$patch" ]; then
    echo "install.sh: no SMYRF_VERSION_* macros in $header" >&2
    exit 1
fi
version=$major.$minor.$patch

install -d "$dest/include" "$dest/$libsub/pkgconfig"
install -m 644 "$header" "$dest/include/smyrf.h"
install -m 755 "$src/libsmyrf.so" "$dest/$libsub/libsmyrf.so.$version"
ln -sf "libsmyrf.so.$version" "$dest/$libsub/libsmyrf.so.$major"
ln -sf "libsmyrf.so.$major" "$dest/$libsub/libsmyrf.so"
install -m 644 "$src/libsmyrf.a" "$dest/$libsub/libsmyrf.a"
# Libs.private: what libsmyrf.a needs from the system
# (cargo rustc --release --lib --crate-type staticlib -- --print native-static-libs).
cat > "$dest/$libsub/pkgconfig/smyrf.pc" <<PC
prefix=$prefix
libdir=\${prefix}/$libsub
includedir=\${prefix}/include

Name: smyrf
Description: SMYRF attention CPU kernels (asymmetric LSH clustering)
Version: $version
Libs: -L\${libdir} -lsmyrf
Libs.private: -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc
Cflags: -I\${includedir}
PC

echo "installed smyrf $version under $dest"
case $prefix in
/usr | /usr/local) [ -n "${DESTDIR:-}" ] || echo "note: run ldconfig if the loader cannot find libsmyrf.so.$major" ;;
*) echo "note: add $prefix/$libsub to the loader path (LD_LIBRARY_PATH or -Wl,-rpath) and $prefix/$libsub/pkgconfig to PKG_CONFIG_PATH" ;;
esac
