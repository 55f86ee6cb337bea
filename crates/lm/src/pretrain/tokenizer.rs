//! Byte-level BPE tokenizer trained on the corpus with the `tokenizers` crate.
//!
//! Same design as GPT-NeoX's tokenizer: byte-level pre-tokenization without a prefix space (so any
//! UTF-8 text, including bytes the corpus never showed, round-trips exactly), a byte-level decoder, and
//! one special token `<|endoftext|>` (id 0) that separates documents and serves as BOS/EOS.
//! The vocabulary size is configurable; it counts the 256 byte symbols and the special token.
//!
//! Training is deterministic for a given input (the trainer breaks ties by pair), which matters
//! because two runs with the same seed must produce the same family; a test checks it.

use std::path::Path;

use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

use super::{PretrainError, Result};

/// The document separator, BOS and EOS token.
pub const END_OF_TEXT: &str = "<|endoftext|>";

/// Smallest useful vocabulary: the 256 bytes, the special token, and a few merges.
pub const MIN_VOCAB: usize = 260;

/// Trains a byte-level BPE of `vocab_size` tokens on `texts`.
pub fn train_tokenizer<S: AsRef<str> + Send + Sync>(
    texts: &[S],
    vocab_size: usize,
) -> Result<Tokenizer> {
    if vocab_size < MIN_VOCAB {
        return Err(PretrainError::Config(format!(
            "vocab_size {vocab_size} is too small (at least {MIN_VOCAB}: 256 bytes, {END_OF_TEXT}, merges)"
        )));
    }
    let trainer = BpeTrainerBuilder::new()
        .show_progress(false)
        .vocab_size(vocab_size)
        .min_frequency(2)
        .special_tokens(vec![AddedToken::from(END_OF_TEXT, true)])
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    let mut trainer = TrainerWrapper::BpeTrainer(trainer);
    let mut tok = Tokenizer::new(BPE::default());
    let byte_level = ByteLevel::new(false, true, true);
    tok.with_pre_tokenizer(Some(byte_level))
        .with_post_processor(Some(byte_level))
        .with_decoder(Some(byte_level));
    tok.train(&mut trainer, texts.iter().map(|s| s.as_ref()))
        .map_err(|e| PretrainError::Tokenizer(format!("training failed: {e}")))?;
    Ok(tok)
}

/// Writes `tokenizer.json`.
pub fn save_tokenizer(tok: &Tokenizer, path: &Path) -> Result<()> {
    tok.save(path, false)
        .map_err(|e| PretrainError::Tokenizer(format!("{}: cannot write: {e}", path.display())))
}

/// Reads `tokenizer.json`.
pub fn load_tokenizer(path: &Path) -> Result<Tokenizer> {
    Tokenizer::from_file(path)
        .map_err(|e| PretrainError::Tokenizer(format!("{}: {e}", path.display())))
}

/// The id of [`END_OF_TEXT`].
pub fn end_of_text_id(tok: &Tokenizer) -> Result<u32> {
    tok.token_to_id(END_OF_TEXT)
        .ok_or_else(|| PretrainError::Tokenizer(format!("tokenizer has no {END_OF_TEXT} token")))
}

/// Token ids of one text (no special tokens added).
pub fn encode(tok: &Tokenizer, text: &str) -> Result<Vec<u32>> {
    Ok(tok
        .encode(text, false)
        .map_err(|e| PretrainError::Tokenizer(format!("encoding failed: {e}")))?
        .get_ids()
        .to_vec())
}

/// Text of token ids.
pub fn decode(tok: &Tokenizer, ids: &[u32]) -> Result<String> {
    tok.decode(ids, false)
        .map_err(|e| PretrainError::Tokenizer(format!("decoding failed: {e}")))
}

/// One token stream: every text's tokens followed by `<|endoftext|>`, encoded in parallel chunks (an
/// `Encoding` holds offsets and token strings too, so encoding all 24 MB at once would need gigabytes).
pub fn encode_stream(tok: &Tokenizer, texts: &[String]) -> Result<Vec<u32>> {
    let eot = end_of_text_id(tok)?;
    let mut out = Vec::new();
    for chunk in texts.chunks(2048) {
        let inputs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let encs = tok
            .encode_batch(inputs, false)
            .map_err(|e| PretrainError::Tokenizer(format!("encoding failed: {e}")))?;
        for e in encs {
            out.extend_from_slice(e.get_ids());
            out.push(eot);
        }
    }
    Ok(out)
}
