//! A minimal, self-contained HTML report: sections of headings, paragraphs,
//! figures, preformatted text and tables.
//!
//! The output is a single HTML string with no external resources (figures are
//! inline SVG or base64 PNG, the style sheet is inline), so a report can be
//! mailed or archived as one file. All text is HTML-escaped; the only markup
//! that is not escaped is SVG produced by this crate from a [`Figure`]
//! (plotters escapes the text inside it).

use std::fmt::Write as _;
use std::path::Path;

use crate::error::{ReportError, Result};
use crate::figure::Figure;

/// One piece of content of a section.
#[derive(Debug, Clone, PartialEq)]
enum Block {
    Paragraph(String),
    /// Inline SVG rendered by this crate, and a caption.
    Svg(String, String),
    /// PNG file contents, and a caption (also used as alt text).
    Png(Vec<u8>, String),
    Pre(String),
    Table(Vec<String>, Vec<Vec<String>>),
}

/// A titled section of a report.
#[derive(Debug, Clone, PartialEq)]
pub struct Section {
    heading: String,
    blocks: Vec<Block>,
}

impl Section {
    /// An empty section with a heading.
    pub fn new(heading: impl Into<String>) -> Section {
        Section {
            heading: heading.into(),
            blocks: Vec::new(),
        }
    }

    /// Adds a paragraph of plain text.
    pub fn paragraph(mut self, text: impl Into<String>) -> Section {
        self.blocks.push(Block::Paragraph(text.into()));
        self
    }

    /// Adds a figure as inline SVG (renders it now; fails if rendering fails).
    pub fn figure(mut self, figure: &Figure, caption: impl Into<String>) -> Result<Section> {
        self.blocks
            .push(Block::Svg(figure.to_svg_string()?, caption.into()));
        Ok(self)
    }

    /// Adds a figure as an embedded PNG image.
    pub fn figure_png(mut self, figure: &Figure, caption: impl Into<String>) -> Result<Section> {
        self.blocks
            .push(Block::Png(figure.to_png_bytes()?, caption.into()));
        Ok(self)
    }

    /// Adds an existing PNG image (file contents), embedded as base64.
    pub fn png(mut self, png: Vec<u8>, caption: impl Into<String>) -> Section {
        self.blocks.push(Block::Png(png, caption.into()));
        self
    }

    /// Adds preformatted text, e.g. a run's TOML configuration.
    pub fn pre(mut self, text: impl Into<String>) -> Section {
        self.blocks.push(Block::Pre(text.into()));
        self
    }

    /// Adds a table with a header row; rows shorter than the header are padded.
    pub fn table<S: Into<String>>(
        mut self,
        header: impl IntoIterator<Item = S>,
        rows: impl IntoIterator<Item = Vec<String>>,
    ) -> Section {
        self.blocks.push(Block::Table(
            header.into_iter().map(Into::into).collect(),
            rows.into_iter().collect(),
        ));
        self
    }

    fn write(&self, out: &mut String) {
        let _ = writeln!(out, "<section>\n<h2>{}</h2>", escape(&self.heading));
        for block in &self.blocks {
            match block {
                Block::Paragraph(t) => {
                    let _ = writeln!(out, "<p>{}</p>", escape(t));
                }
                Block::Svg(svg, caption) => {
                    let _ = writeln!(out, "<figure>\n{svg}");
                    write_caption(out, caption);
                }
                Block::Png(png, caption) => {
                    let _ = writeln!(
                        out,
                        "<figure>\n<img alt=\"{}\" src=\"data:image/png;base64,{}\">",
                        escape(caption),
                        base64(png)
                    );
                    write_caption(out, caption);
                }
                Block::Pre(t) => {
                    let _ = writeln!(out, "<pre>{}</pre>", escape(t));
                }
                Block::Table(header, rows) => {
                    out.push_str("<table>\n<thead><tr>");
                    for h in header {
                        let _ = write!(out, "<th>{}</th>", escape(h));
                    }
                    out.push_str("</tr></thead>\n<tbody>\n");
                    for row in rows {
                        out.push_str("<tr>");
                        let cells = row.len().max(header.len());
                        for i in 0..cells {
                            let cell = row.get(i).map(String::as_str).unwrap_or("");
                            let _ = write!(out, "<td>{}</td>", escape(cell));
                        }
                        out.push_str("</tr>\n");
                    }
                    out.push_str("</tbody>\n</table>\n");
                }
            }
        }
        out.push_str("</section>\n");
    }
}

fn write_caption(out: &mut String, caption: &str) {
    if !caption.is_empty() {
        let _ = writeln!(out, "<figcaption>{}</figcaption>", escape(caption));
    }
    out.push_str("</figure>\n");
}

/// A whole report: a title and sections.
///
/// ```
/// use w2sg_report::{Report, Section};
/// let html = Report::new("Run 7")
///     .section(Section::new("Setup").pre("seed = 7\n").paragraph("a < b"))
///     .to_html();
/// assert!(html.contains("a &lt; b"));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    title: String,
    sections: Vec<Section>,
}

const STYLE: &str = "body{font-family:'DejaVu Sans',sans-serif;max-width:60em;margin:2em auto;\
padding:0 1em;color:#222;line-height:1.45}h1,h2{font-weight:normal}\
figure{margin:1.5em 0}figure svg,figure img{max-width:100%;height:auto}\
figcaption{color:#555;font-size:.9em}pre{background:#f5f5f5;padding:.8em;overflow-x:auto}\
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:.3em .7em;\
text-align:left}th{background:#f0f0f0}";

impl Report {
    /// An empty report.
    pub fn new(title: impl Into<String>) -> Report {
        Report {
            title: title.into(),
            sections: Vec::new(),
        }
    }

    /// Appends a section.
    pub fn section(mut self, section: Section) -> Report {
        self.sections.push(section);
        self
    }

    /// Appends a section (for use in loops).
    pub fn push(&mut self, section: Section) {
        self.sections.push(section);
    }

    /// The complete HTML document.
    pub fn to_html(&self) -> String {
        let title = escape(&self.title);
        let mut out = format!(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{title}</h1>\n"
        );
        for s in &self.sections {
            s.write(&mut out);
        }
        out.push_str("</body>\n</html>\n");
        out
    }

    /// Writes the HTML document to `path` (its folder must exist).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        std::fs::write(path, self.to_html()).map_err(|e| ReportError::io(path, e))
    }
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Standard base64 with padding (RFC 4648), for data URLs.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (input, expected) in cases {
            assert_eq!(base64(input.as_bytes()), expected);
        }
    }

    #[test]
    fn escapes_all_special_characters() {
        assert_eq!(
            escape(r#"<a href="x">&'"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn tables_pad_short_rows() {
        let html = Report::new("t")
            .section(Section::new("s").table(["a", "b"], vec![vec!["1".to_string()]]))
            .to_html();
        assert!(html.contains("<tr><td>1</td><td></td></tr>"), "{html}");
    }
}
