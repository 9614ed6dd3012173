//! A behaviour's reference MinHashes, read from the compact `.mhash` files that
//! `tools/harmbench/convert_copyright_hashes.py` writes from HarmBench's pickles
//! (`data/copyright_classifier_hashes/<BehaviorID>.pkl`, lists of datasketch MinHashes). The
//! pickles need Python and datasketch to read and are 6x larger; the hash values are all the
//! judge uses, so the compact file keeps only them and the parameters they depend on.
//!
//! Format (little-endian): magic `MHSH`, then u32 version (1), u32 num_perm (128),
//! u32 seed (1), u32 count (> 0), then `count × num_perm` u32 hash values, signature by
//! signature, and nothing after.

use std::path::{Path, PathBuf};

use super::minhash::{MinHash, NUM_PERM, SEED};
use super::WindowShape;

/// The file magic.
pub const MAGIC: [u8; 4] = *b"MHSH";
/// The format version this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// The file extension: `<BehaviorID>.mhash`.
pub const EXTENSION: &str = "mhash";
/// Environment variable naming the directory of converted files.
pub const HASHES_DIR_ENV: &str = "METIS_HARMBENCH_HASHES";

const HEADER_LEN: usize = 20;
const SIGNATURE_LEN: usize = NUM_PERM * 4;

/// Why a reference file cannot be used; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a MinHash reference file (magic {found:?}, expected \"MHSH\")")]
    BadMagic { path: PathBuf, found: Vec<u8> },
    #[error("{path}: format version {found}; this build reads version {FORMAT_VERSION}")]
    UnsupportedVersion { path: PathBuf, found: u32 },
    #[error("{path}: num_perm {found}; HarmBench's MinHashes have {NUM_PERM}")]
    WrongNumPerm { path: PathBuf, found: u32 },
    #[error("{path}: seed {found}; HarmBench's MinHashes have seed {SEED}")]
    WrongSeed { path: PathBuf, found: u32 },
    #[error("{path}: truncated: {expected} bytes expected, {found} present")]
    Truncated {
        path: PathBuf,
        expected: usize,
        found: usize,
    },
    #[error("{path}: {extra} bytes after the {count} signatures")]
    TrailingBytes {
        path: PathBuf,
        count: usize,
        extra: usize,
    },
    #[error("{path}: holds no signatures, so nothing could ever match")]
    Empty { path: PathBuf },
}

/// The reference signatures of one copyright behaviour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferenceHashes {
    signatures: Vec<MinHash>,
}

impl ReferenceHashes {
    /// A reference set from signatures already computed.
    pub fn from_signatures(signatures: Vec<MinHash>) -> Self {
        ReferenceHashes { signatures }
    }

    /// The sliding-window signatures of a source text, for a reference set of one's own
    /// (HarmBench's were computed from the copyrighted texts, which are not distributed).
    pub fn from_text(text: &str, shape: WindowShape) -> Self {
        let tokens = super::tokenize(text);
        Self::from_signatures(super::window_signatures(&tokens, shape))
    }

    /// Reads `<dir>/<behavior_id>.mhash`.
    pub fn load_behavior(dir: &Path, behavior_id: &str) -> Result<Self, ReferenceError> {
        Self::load(&dir.join(format!("{behavior_id}.{EXTENSION}")))
    }

    /// Reads one `.mhash` file.
    pub fn load(path: &Path) -> Result<Self, ReferenceError> {
        let bytes = std::fs::read(path).map_err(|source| ReferenceError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&bytes, path)
    }

    /// Decodes the bytes of a `.mhash` file; `path` only names it in errors.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Self, ReferenceError> {
        let path = || path.to_owned();
        if bytes.len() < HEADER_LEN {
            if !bytes.is_empty() && !MAGIC.starts_with(&bytes[..bytes.len().min(4)]) {
                return Err(ReferenceError::BadMagic {
                    path: path(),
                    found: bytes[..bytes.len().min(4)].to_vec(),
                });
            }
            return Err(ReferenceError::Truncated {
                path: path(),
                expected: HEADER_LEN,
                found: bytes.len(),
            });
        }
        let field = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
        if bytes[..4] != MAGIC {
            return Err(ReferenceError::BadMagic {
                path: path(),
                found: bytes[..4].to_vec(),
            });
        }
        let (version, num_perm, seed, count) = (field(4), field(8), field(12), field(16));
        if version != FORMAT_VERSION {
            return Err(ReferenceError::UnsupportedVersion {
                path: path(),
                found: version,
            });
        }
        if num_perm as usize != NUM_PERM {
            return Err(ReferenceError::WrongNumPerm {
                path: path(),
                found: num_perm,
            });
        }
        if seed != SEED {
            return Err(ReferenceError::WrongSeed {
                path: path(),
                found: seed,
            });
        }
        let count = count as usize;
        if count == 0 {
            return Err(ReferenceError::Empty { path: path() });
        }
        let expected = HEADER_LEN + count * SIGNATURE_LEN;
        if bytes.len() < expected {
            return Err(ReferenceError::Truncated {
                path: path(),
                expected,
                found: bytes.len(),
            });
        }
        if bytes.len() > expected {
            return Err(ReferenceError::TrailingBytes {
                path: path(),
                count,
                extra: bytes.len() - expected,
            });
        }
        let signatures = bytes[HEADER_LEN..]
            .chunks_exact(SIGNATURE_LEN)
            .map(|chunk| {
                let mut values = [0u32; NUM_PERM];
                for (value, raw) in values.iter_mut().zip(chunk.chunks_exact(4)) {
                    *value = u32::from_le_bytes(raw.try_into().expect("4 bytes"));
                }
                MinHash::from_values(values)
            })
            .collect();
        Ok(ReferenceHashes { signatures })
    }

    /// The `.mhash` encoding of this set (what the converter writes).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(HEADER_LEN + self.signatures.len() * SIGNATURE_LEN);
        bytes.extend_from_slice(&MAGIC);
        for field in [
            FORMAT_VERSION,
            NUM_PERM as u32,
            SEED,
            self.signatures.len() as u32,
        ] {
            bytes.extend_from_slice(&field.to_le_bytes());
        }
        for signature in &self.signatures {
            for value in signature.values() {
                bytes.extend_from_slice(&value.to_le_bytes());
            }
        }
        bytes
    }

    /// The signatures, in file order.
    pub fn signatures(&self) -> &[MinHash] {
        &self.signatures
    }

    pub fn len(&self) -> usize {
        self.signatures.len()
    }

    pub fn is_empty(&self) -> bool {
        self.signatures.is_empty()
    }
}

/// Where the converted files are looked for: `$METIS_HARMBENCH_HASHES`, else the converter's
/// default `~/.cache/metis/harmbench/copyright_hashes`; `None` without either variable.
pub fn default_hashes_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os(HASHES_DIR_ENV).filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
    Some(PathBuf::from(home).join(".cache/metis/harmbench/copyright_hashes"))
}
