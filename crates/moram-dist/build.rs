//! Compiles the C++ shim over libtorch's c10d against the libtorch that torch-sys links
//! (`DEP_TCH_LIBTORCH_LIB`, or `LIBTORCH_INCLUDE`), with the vendored Gloo headers.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=csrc/shim.cpp");
    println!("cargo:rerun-if-changed=vendor/gloo");
    println!("cargo:rerun-if-env-changed=LIBTORCH_INCLUDE");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    let include = match std::env::var_os("LIBTORCH_INCLUDE") {
        Some(dir) => PathBuf::from(dir).join("include"),
        None => {
            let Some(lib) = std::env::var_os("DEP_TCH_LIBTORCH_LIB") else {
                panic!("torch-sys did not report its libtorch (DEP_TCH_LIBTORCH_LIB); set LIBTORCH_INCLUDE");
            };
            PathBuf::from(lib).parent().map(|p| p.join("include")).expect("libtorch lib dir has a parent")
        }
    };
    let c10d = include.join("torch/csrc/distributed/c10d/ProcessGroupGloo.hpp");
    assert!(c10d.exists(), "{} is missing: this libtorch has no c10d headers", c10d.display());
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .include("vendor/gloo")
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .define("USE_C10D_GLOO", None)
        .define("GLOG_USE_GLOG_EXPORT", None)
        .file("csrc/shim.cpp");
    if std::env::var_os("CARGO_FEATURE_NCCL").is_some() {
        build.define("MORAM_NCCL", None).define("USE_C10D_NCCL", None).define("USE_CUDA", None);
        println!("cargo:rerun-if-env-changed=CUDA_HOME");
        println!("cargo:rerun-if-env-changed=NCCL_INCLUDE_DIR");
        if let Some(cuda) = std::env::var_os("CUDA_HOME") {
            let include = PathBuf::from(cuda).join("include");
            // CUDA 13 keeps libcu++ (`nv/target`) under include/cccl.
            if include.join("cccl").exists() {
                build.include(include.join("cccl"));
            }
            build.include(include);
        }
        if let Some(nccl) = std::env::var_os("NCCL_INCLUDE_DIR") {
            build.include(nccl);
        }
        println!("cargo:rustc-link-lib=torch_cuda");
    }
    build.compile("moram_dist_shim");
}
