#!/bin/sh
# Installs the C interface of smyrf under PREFIX (default /usr/local):
#   PREFIX/include/smyrf.h
#   PREFIX/lib/libsmyrf.so.X.Y.Z, SONAME -> libsmyrf.so.X.Y.Z, libsmyrf.so -> SONAME, where
#     SONAME is libsmyrf.so.0.Y for 0.y releases and libsmyrf.so.X from 1.0 on (design §3)
#   PREFIX/lib/libsmyrf.a
#   PREFIX/lib/pkgconfig/smyrf.pc
#   PREFIX/lib/cmake/smyrf/smyrfConfig.cmake, smyrfConfigVersion.cmake (find_package(smyrf))
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
libsub=$(printf '%s' "${LIBSUBDIR:-lib}" | sed 's:/*$::')
case /$libsub/ in
//* | */../* | */./* | *//*)
    echo "install.sh: LIBSUBDIR must be a plain relative path like lib64, got '$libsub'" >&2
    exit 2
    ;;
esac
dest=${DESTDIR:-}$prefix

for file in "$header" "$src/libsmyrf.so" "$src/libsmyrf.a"; do
    if [ ! -f "$file" ]; then
        echo "install.sh: $file is missing; run 'cargo build --release' first (or set LIBDIR)" >&2
        exit 1
    fi
done

# The version, and with it the SONAME, comes from the header, which matches the library.
macro() { sed -n "s/^#define SMYRF_VERSION_$1 \([0-9][0-9]*\)\$/\1/p" "$header"; }
major=$(macro MAJOR)
minor=$(macro MINOR)
patch=$(macro PATCH)
if [ -z "$major" ] || [ -z "$minor" ] || [ -z "$patch" ]; then
    echo "install.sh: no SMYRF_VERSION_* macros in $header" >&2
    exit 1
fi
version=$major.$minor.$patch
# In 0.y a minor release may break the ABI, so it names the SONAME (cargo-c's convention).
if [ "$major" = 0 ]; then abi=0.$minor; else abi=$major; fi
soname=libsmyrf.so.$abi
# The library's pointer size (its ELF class byte: 1 = 32-bit, 2 = 64-bit): the CMake
# version file refuses a project of the other size, as CMake's own version files do.
case $(od -An -tu1 -j4 -N1 "$src/libsmyrf.so" | tr -d ' ') in
1) pointer=4 ;;
2) pointer=8 ;;
*) echo "install.sh: $src/libsmyrf.so is not an ELF library" >&2; exit 1 ;;
esac

install -d "$dest/include" "$dest/$libsub/pkgconfig" "$dest/$libsub/cmake/smyrf"
install -m 644 "$header" "$dest/include/smyrf.h"
install -m 755 "$src/libsmyrf.so" "$dest/$libsub/libsmyrf.so.$version"
ln -sf "libsmyrf.so.$version" "$dest/$libsub/$soname"
ln -sf "$soname" "$dest/$libsub/libsmyrf.so"
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

# The CMake package finds the prefix from its own location, so a DESTDIR-staged or moved
# install works: climb cmake/smyrf, then one level per component of LIBSUBDIR.
up=$(printf '%s\n' "$libsub" | sed 's:[^/][^/]*:..:g')
if [ "$major" = 0 ]; then
    same_series="PACKAGE_FIND_VERSION_MAJOR EQUAL 0 AND PACKAGE_FIND_VERSION_MINOR EQUAL $minor"
else
    same_series="PACKAGE_FIND_VERSION_MAJOR EQUAL $major"
fi
cat > "$dest/$libsub/cmake/smyrf/smyrfConfig.cmake" <<CMAKE
# smyrf $version, written by scripts/install.sh. Imported targets: smyrf::smyrf (the
# shared library) and smyrf::smyrf_static (the archive and the system libraries it needs).
include(CMakeFindDependencyMacro)
find_dependency(Threads)

get_filename_component(_smyrf_libdir "\${CMAKE_CURRENT_LIST_DIR}/../.." ABSOLUTE)
get_filename_component(_smyrf_prefix "\${_smyrf_libdir}/$up" ABSOLUTE)
foreach(_smyrf_file "\${_smyrf_prefix}/include/smyrf.h" "\${_smyrf_libdir}/libsmyrf.so.$version"
        "\${_smyrf_libdir}/libsmyrf.a")
  if(NOT EXISTS "\${_smyrf_file}")
    set(smyrf_FOUND FALSE)
    set(smyrf_NOT_FOUND_MESSAGE "\${_smyrf_file} is missing from the smyrf install")
    return()
  endif()
endforeach()

if(NOT TARGET smyrf::smyrf)
  add_library(smyrf::smyrf SHARED IMPORTED)
  set_target_properties(smyrf::smyrf PROPERTIES
    IMPORTED_LOCATION "\${_smyrf_libdir}/libsmyrf.so.$version"
    IMPORTED_SONAME "$soname"
    INTERFACE_INCLUDE_DIRECTORIES "\${_smyrf_prefix}/include")
endif()
if(NOT TARGET smyrf::smyrf_static)
  add_library(smyrf::smyrf_static STATIC IMPORTED)
  # What libsmyrf.a needs from the system: Libs.private of smyrf.pc.
  set_target_properties(smyrf::smyrf_static PROPERTIES
    IMPORTED_LOCATION "\${_smyrf_libdir}/libsmyrf.a"
    IMPORTED_LINK_INTERFACE_LANGUAGES C
    INTERFACE_INCLUDE_DIRECTORIES "\${_smyrf_prefix}/include"
    INTERFACE_LINK_LIBRARIES "Threads::Threads;m;dl;rt;util;gcc_s")
endif()
unset(_smyrf_file)
unset(_smyrf_libdir)
unset(_smyrf_prefix)
CMAKE
cat > "$dest/$libsub/cmake/smyrf/smyrfConfigVersion.cmake" <<CMAKE
# smyrf $version, written by scripts/install.sh. Compatibility follows the SONAME
# ($soname): a 0.y.z install serves requests for 0.y.w with w <= z, an X.y.z install
# (X >= 1) serves X.w.v up to itself; a version range accepts what lies inside it.
set(PACKAGE_VERSION "$version")
set(PACKAGE_VERSION_COMPATIBLE FALSE)
if(PACKAGE_FIND_VERSION_RANGE)
  if(PACKAGE_VERSION VERSION_GREATER_EQUAL PACKAGE_FIND_VERSION_MIN
      AND ((PACKAGE_FIND_VERSION_RANGE_MAX STREQUAL "INCLUDE"
            AND PACKAGE_VERSION VERSION_LESS_EQUAL PACKAGE_FIND_VERSION_MAX)
        OR (PACKAGE_FIND_VERSION_RANGE_MAX STREQUAL "EXCLUDE"
            AND PACKAGE_VERSION VERSION_LESS PACKAGE_FIND_VERSION_MAX)))
    set(PACKAGE_VERSION_COMPATIBLE TRUE)
  endif()
elseif(PACKAGE_VERSION VERSION_GREATER_EQUAL PACKAGE_FIND_VERSION
    AND $same_series)
  set(PACKAGE_VERSION_COMPATIBLE TRUE)
  if(PACKAGE_FIND_VERSION VERSION_EQUAL PACKAGE_VERSION)
    set(PACKAGE_VERSION_EXACT TRUE)
  endif()
endif()
if(NOT "\${CMAKE_SIZEOF_VOID_P}" STREQUAL "" AND NOT CMAKE_SIZEOF_VOID_P STREQUAL "$pointer")
  set(PACKAGE_VERSION "\${PACKAGE_VERSION} ($pointer-byte pointers)")
  set(PACKAGE_VERSION_UNSUITABLE TRUE)
endif()
CMAKE

echo "installed smyrf $version under $dest"
case $prefix in
/usr | /usr/local) [ -n "${DESTDIR:-}" ] || echo "note: run ldconfig if the loader cannot find $soname" ;;
*) echo "note: add $prefix/$libsub to the loader path (LD_LIBRARY_PATH or -Wl,-rpath), $prefix/$libsub/pkgconfig to PKG_CONFIG_PATH and $prefix to CMAKE_PREFIX_PATH" ;;
esac
