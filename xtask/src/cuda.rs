//! `cargo xtask test --cuda`: the whole test suite built against the CUDA libtorch
//! (`.libtorch-cuda/`, `cargo xtask setup --cuda`) and run on this machine's CPU, so the GPU build
//! is known to link and to behave like the CPU one before a GPU machine ever runs it.
//!
//! - `libtorch_cuda.so` needs the CUDA libraries PyTorch's wheels depend on (cuBLAS, cuDNN,
//!   cuFFT, cuRAND, cuSPARSE(Lt), cuSOLVER, cuFile, NCCL, NVSHMEM) at link time and at run time.
//!   They come from the NVIDIA wheels on PyPI, installed with PyTorch 2.11.0 into the fixtures'
//!   virtual environment (`cargo xtask fixtures` uses the same one; about 2.7 GB the first time).
//!   The linker finds them through `-rpath-link`, the tests through `LD_LIBRARY_PATH`. Nothing is
//!   left undefined (`--allow-shlib-undefined` is not needed).
//! - The binaries keep `libtorch_cuda.so` although no Rust symbol refers to it
//!   (`-Wl,--no-as-needed -ltorch_cuda` at the end of the link line): without it
//!   `Cuda::is_available()` would be false on a GPU machine.
//! - The build goes to `target/cuda/` (its own libtorch, so its own torch-sys) in the release
//!   profile (a second debug build of the workspace would need tens of GB), for an explicit
//!   `--target`, so that the link flags reach only the target's binaries: build scripts and proc
//!   macros linked against `libtorch_cuda.so` would load the CUDA libraries into rustc itself
//!   (seen: rustc crashed with SIGSEGV loading `serde_derive`). `CARGO_BUILD_TARGET` carries the
//!   same to the cargo commands the tests run themselves.
//! - The built `moram` is checked to link `libtorch_cuda.so` and to report no CUDA device here.

use crate::{fixtures, paths, python, setup};
use anyhow::{bail, Context, Result};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The folders holding the NVIDIA wheels' libraries in the virtual environment of `python`.
fn nvidia_lib_dirs(python: &Path) -> Result<Vec<PathBuf>> {
    let venv = python.parent().and_then(Path::parent).context("the venv's python is not in <venv>/bin")?;
    let mut dirs = Vec::new();
    for lib in std::fs::read_dir(venv.join("lib")).with_context(|| format!("reading {}/lib", venv.display()))? {
        let nvidia = lib?.path().join("site-packages").join("nvidia");
        let Ok(entries) = std::fs::read_dir(&nvidia) else { continue };
        for e in entries {
            let dir = e?.path().join("lib");
            if dir.is_dir() {
                dirs.push(dir);
            }
        }
    }
    dirs.sort();
    if dirs.is_empty() {
        bail!("no NVIDIA libraries under {} (is torch==2.11.0 installed there?)", venv.display());
    }
    Ok(dirs)
}

fn joined(paths: &[PathBuf]) -> OsString {
    std::env::join_paths(paths).unwrap_or_default()
}

/// The CUDA 13.0 compiler headers (`crt/`) and libcu++ (`nv/target`) matching the runtime wheel
/// PyTorch 2.11 pulls (headers only).
const HEADER_WHEELS: [&str; 2] = ["nvidia-cuda-crt==13.0.88", "nvidia-cuda-cccl==13.0.85"];

/// The x86-64 Linux target every CUDA build names explicitly (see the module text).
pub const TRIPLE: &str = "x86_64-unknown-linux-gnu";

/// What a build and run against `.libtorch-cuda/` needs: its folders, link flags and library path.
pub struct CudaEnv {
    libtorch: PathBuf,
    /// `target/cuda`.
    pub target: PathBuf,
    rustflags: Vec<String>,
    /// The library path of the binaries: libtorch, then the NVIDIA wheels' folders.
    pub runtime: Vec<PathBuf>,
    /// The NVIDIA wheels' CUDA headers (`CUDA_HOME`) and `nccl.h` folder (`NCCL_INCLUDE_DIR`), for
    /// moram-dist's NCCL shim.
    headers: Vec<(&'static str, PathBuf)>,
}

impl CudaEnv {
    /// Installs the CUDA libtorch and the NVIDIA wheels when missing and computes the flags.
    pub fn prepare() -> Result<Self> {
        setup::install(setup::Flavour::Cuda, false)?;
        let root = paths::workspace_root();
        let libtorch = root.join(".libtorch-cuda");
        let torch_python = python::venv_with(&paths::cache_dir()?.join("venv-torch-2.11.0"), &fixtures::REQUIREMENTS)?;
        let nvidia = nvidia_lib_dirs(&torch_python)?;
        anyhow::ensure!(
            cfg!(all(target_os = "linux", target_arch = "x86_64")),
            "the CUDA libtorch of PyPI is for x86-64 Linux only"
        );
        // `-l torch_cuda` after `--no-as-needed` at the end of every link line: rustc puts its own
        // `--as-needed` before the libraries, so only an explicit late `-l` keeps it (checked:
        // without it the binary lacks libtorch_cuda.so). `-L` for the crates without a libtorch
        // dependency.
        let mut rustflags: Vec<String> = ["-Wl,--no-as-needed", "-ltorch_cuda"]
            .iter()
            .flat_map(|a| ["-C".to_string(), format!("link-arg={a}")])
            .collect();
        rustflags.push("-C".into());
        rustflags.push(format!("link-arg=-L{}", libtorch.join("lib").display()));
        rustflags.push("-C".into());
        rustflags.push(format!("link-arg=-Wl,-rpath-link,{}", joined(&nvidia).to_string_lossy()));
        // Binaries in target/cuda/<triple>/release, test executables one level deeper.
        rustflags.push("-C".into());
        rustflags.push(
            "link-arg=-Wl,-rpath,$ORIGIN/../../../../.libtorch-cuda/lib:$ORIGIN/../../../../../.libtorch-cuda/lib"
                .into(),
        );
        let mut runtime = vec![libtorch.join("lib")];
        runtime.extend(nvidia.iter().cloned());
        if let Some(old) = std::env::var_os("LD_LIBRARY_PATH") {
            runtime.extend(std::env::split_paths(&old));
        }
        // `nvidia/<lib>/lib` -> `nvidia/<lib>`: the wheels ship the headers beside the libraries.
        let wheel =
            |name: &str| nvidia.iter().filter_map(|d| d.parent()).find(|d| d.ends_with(name)).map(Path::to_path_buf);
        let mut headers = Vec::new();
        if let Some(cuda) = wheel("cu13") {
            // The runtime wheel's headers include the compiler's (`crt/host_config.h`) and
            // libcu++'s (`nv/target`), which ship in wheels of their own; the NCCL shim needs them.
            let include = cuda.join("include");
            if !include.join("crt").join("host_config.h").exists() || !include.join("nv").join("target").exists() {
                let mut pip = Command::new(&torch_python);
                pip.args(["-m", "pip", "install", "-q"]).args(HEADER_WHEELS);
                paths::run_checked(&mut pip).context("installing the CUDA compiler and libcu++ headers (PyPI)")?;
            }
            headers.push(("CUDA_HOME", cuda));
        }
        if let Some(nccl) = wheel("nccl") {
            headers.push(("NCCL_INCLUDE_DIR", nccl.join("include")));
        }
        Ok(CudaEnv { libtorch, target: root.join("target").join("cuda"), rustflags, runtime, headers })
    }

    /// Sets `cmd` (a cargo command or a built binary) up for the CUDA build.
    pub fn configure(&self, cmd: &mut Command) {
        cmd.env("LIBTORCH", &self.libtorch)
            .env_remove("LIBTORCH_USE_PYTORCH")
            .env("CARGO_TARGET_DIR", &self.target)
            // Also for the cargo commands tests start themselves (`cargo run -p xtask ...`).
            .env("CARGO_BUILD_TARGET", TRIPLE)
            .env("RUSTFLAGS", self.rustflags.join(" "))
            .env("LD_LIBRARY_PATH", joined(&self.runtime));
        for (var, dir) in &self.headers {
            if std::env::var_os(var).is_none() {
                cmd.env(var, dir);
            }
        }
    }

    /// Builds `package` (release, with `features`) and returns its binary `bin`.
    pub fn build(&self, package: &str, features: &[&str], bin: &str) -> Result<PathBuf> {
        let mut build = paths::cargo();
        build.args(["build", "--release", "--target", TRIPLE, "-p", package]);
        if !features.is_empty() {
            build.args(["--features", &features.join(",")]);
        }
        self.configure(&mut build);
        paths::run_checked(&mut build).with_context(|| format!("building {package} against the CUDA libtorch"))?;
        Ok(self.target.join(TRIPLE).join("release").join(bin))
    }
}

/// Builds and runs the workspace's tests against `.libtorch-cuda/` (see the module text); `args`
/// go to `cargo test` as for `cargo xtask test`. Returns the environment, for the GPU check's
/// binary after the tests.
pub fn test(args: &[String]) -> Result<CudaEnv> {
    let env = CudaEnv::prepare()?;
    setup::install_assets()?;
    let runtime = &env.runtime;
    // The binary first: it must link libtorch_cuda and see no GPU on this machine.
    let moram = env.build("moram-cli", &[], "moram")?;
    let ldd = Command::new("ldd").arg(&moram).env("LD_LIBRARY_PATH", joined(runtime)).output()?;
    let linked = String::from_utf8_lossy(&ldd.stdout);
    if !linked.contains("libtorch_cuda.so") || linked.contains("not found") {
        bail!("{} does not link libtorch_cuda.so with every library found:\n{linked}", moram.display());
    }
    let info = Command::new(&moram).arg("info").env("LD_LIBRARY_PATH", joined(runtime)).output()?;
    let text = String::from_utf8_lossy(&info.stdout);
    eprintln!("{}", text.trim_end());
    if !info.status.success() || !text.contains("cuda available: ") {
        bail!("`moram info` of the CUDA build failed: {}", String::from_utf8_lossy(&info.stderr));
    }

    let mut cmd = paths::cargo();
    cmd.args(["test", "--workspace", "--release", "--target", TRIPLE]).args(args);
    env.configure(&mut cmd);
    cmd.env("MORAM_ASSETS", setup::assets_dir()?);
    cmd.env(moram_assets::REQUIRE_ASSETS, "1");
    let clients = python::venv_with(&paths::cache_dir()?.join("venv-clients"), &python::CLIENT_REQUIREMENTS)?;
    cmd.env(python::CLIENT_PYTHON_ENV, clients);
    paths::run_checked(&mut cmd)?;
    Ok(env)
}
