//! The hub's HTTP API as `w2sg lm download` uses it: refs, revision info, the paginated tree, and
//! file downloads through redirects. Blocking `ureq` with rustls; redirects are followed by hand so
//! that the token only goes to the hub's own host and a resumed download's `Range` header reaches
//! the host that serves the bytes.

use std::time::Duration;

use super::{DownloadError, Result};

pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Whether `HF_HUB_OFFLINE` is set to a true value (as `huggingface_hub` reads it).
pub fn offline_from_env() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_uppercase().as_str(),
            "1" | "ON" | "YES" | "TRUE"
        )
    })
}

/// A file of a revision as the tree API lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFile {
    pub path: String,
    pub size: u64,
    /// The blob name in the cache: the LFS sha256, else the git blob id.
    pub etag: String,
    /// The LFS sha256, checked after download.
    pub sha256: Option<String>,
}

/// A hub client.
pub struct Hub {
    endpoint: String,
    token: Option<String>,
    offline: bool,
    agent: ureq::Agent,
}

/// Percent-encodes a path segment list, keeping `/` when `keep_slash`.
pub(super) fn encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `scheme://host[:port]` of a URL.
pub(super) fn origin(url: &str) -> &str {
    let after = url.find("://").map_or(0, |i| i + 3);
    match url[after..].find('/') {
        Some(i) => &url[..after + i],
        None => url,
    }
}

fn header(resp: &ureq::http::Response<ureq::Body>, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The `rel="next"` URL of a `Link` header.
pub(super) fn next_link(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        params.contains("rel=\"next\"").then(|| {
            url.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string()
        })
    })
}

impl Hub {
    /// The hub from `HF_ENDPOINT`, `HF_TOKEN` and `HF_HUB_OFFLINE`.
    pub fn from_env() -> Self {
        let endpoint = std::env::var("HF_ENDPOINT")
            .ok()
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        let token = std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty());
        Hub::new(&endpoint, token, offline_from_env())
    }

    pub fn new(endpoint: &str, token: Option<String>, offline: bool) -> Self {
        // Redirects are followed by hand: the token must not go to another host, and a resumed
        // download's Range header must reach the host that serves the bytes.
        let agent = ureq::Agent::config_builder()
            .max_redirects(0)
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(120)))
            .timeout_recv_body(None)
            .build()
            .into();
        Hub {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            token,
            offline,
            agent,
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn offline(&self) -> bool {
        self.offline
    }

    /// GET with redirects followed (at most 5), the token sent only to the endpoint's host.
    pub(super) fn get(
        &self,
        url: &str,
        range_from: u64,
    ) -> Result<(ureq::http::Response<ureq::Body>, String)> {
        if self.offline {
            return Err(DownloadError::Offline(format!("would fetch {url}")));
        }
        let mut url = url.to_string();
        for _ in 0..6 {
            let mut req = self.agent.get(&url).header("User-Agent", "w2sg");
            if range_from > 0 {
                req = req.header("Range", format!("bytes={range_from}-"));
            }
            if let Some(t) = &self.token {
                if origin(&url) == origin(&self.endpoint) {
                    req = req.header("Authorization", format!("Bearer {t}"));
                }
            }
            let resp = req.call().map_err(|e| DownloadError::Http {
                url: url.clone(),
                problem: e.to_string(),
            })?;
            let status = resp.status().as_u16();
            if (300..400).contains(&status) {
                let loc = header(&resp, "location").ok_or_else(|| DownloadError::Http {
                    url: url.clone(),
                    problem: format!("HTTP {status} without a Location header"),
                })?;
                url = if loc.starts_with('/') {
                    format!("{}{loc}", origin(&url))
                } else {
                    loc
                };
                continue;
            }
            return Ok((resp, url));
        }
        Err(DownloadError::Http {
            url,
            problem: "too many redirects".into(),
        })
    }

    /// GET a JSON API path; `not_found` is the message for a 404.
    fn json(
        &self,
        url: &str,
        not_found: impl FnOnce() -> String,
    ) -> Result<(serde_json::Value, Option<String>)> {
        let (mut resp, url) = self.get(url, 0)?;
        let status = resp.status().as_u16();
        check_status(status, &url, not_found)?;
        let link = header(&resp, "link");
        let text = resp
            .body_mut()
            .with_config()
            .limit(256 << 20)
            .read_to_string()
            .map_err(|e| DownloadError::Http {
                url: url.clone(),
                problem: e.to_string(),
            })?;
        let v = serde_json::from_str(&text).map_err(|e| DownloadError::Http {
            url: url.clone(),
            problem: format!("not JSON: {e}"),
        })?;
        Ok((v, link))
    }

    /// The repository's branches and their commits, sorted by name.
    pub fn refs(&self, repo: &str) -> Result<Vec<(String, String)>> {
        let url = format!("{}/api/models/{repo}/refs", self.endpoint);
        let (v, _) = self.json(&url, || {
            format!("repository `{repo}` not found on {}", self.endpoint)
        })?;
        let mut out: Vec<(String, String)> = v["branches"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|b| {
                        Some((
                            b["name"].as_str()?.to_string(),
                            b["targetCommit"].as_str()?.to_string(),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        Ok(out)
    }

    /// The commit of a revision (branch, tag or commit hash).
    pub fn commit(&self, repo: &str, revision: &str) -> Result<String> {
        let url = format!(
            "{}/api/models/{repo}/revision/{}",
            self.endpoint,
            encode(revision, false)
        );
        let (v, _) = self.json(&url, || format!("{repo} has no revision `{revision}`"))?;
        v["sha"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| DownloadError::Http {
                url,
                problem: "revision info without `sha`".into(),
            })
    }

    /// Every file of a commit.
    pub fn tree(&self, repo: &str, commit: &str) -> Result<Vec<RemoteFile>> {
        let mut url = Some(format!(
            "{}/api/models/{repo}/tree/{commit}?recursive=true&expand=false",
            self.endpoint
        ));
        let mut files = Vec::new();
        while let Some(u) = url.take() {
            let (v, link) = self.json(&u, || format!("{repo} has no commit {commit}"))?;
            for e in v.as_array().into_iter().flatten() {
                if e["type"].as_str() != Some("file") {
                    continue;
                }
                let (Some(path), Some(size), Some(oid)) =
                    (e["path"].as_str(), e["size"].as_u64(), e["oid"].as_str())
                else {
                    continue;
                };
                let lfs = e["lfs"]["oid"]
                    .as_str()
                    .map(|s| s.trim_start_matches("sha256:").to_string());
                let size = e["lfs"]["size"].as_u64().unwrap_or(size);
                files.push(RemoteFile {
                    path: path.to_string(),
                    size,
                    etag: lfs.clone().unwrap_or_else(|| oid.to_string()),
                    sha256: lfs,
                });
            }
            url = link.as_deref().and_then(next_link).map(|n| {
                if n.starts_with('/') {
                    format!("{}{n}", origin(&self.endpoint))
                } else {
                    n
                }
            });
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(files)
    }
}

pub(super) fn check_status(
    status: u16,
    url: &str,
    not_found: impl FnOnce() -> String,
) -> Result<()> {
    match status {
        200..=299 => Ok(()),
        404 => Err(DownloadError::Input(not_found())),
        401 | 403 => Err(DownloadError::Http {
            url: url.to_string(),
            problem: format!(
                "HTTP {status}: access denied (a gated or private repository needs HF_TOKEN)"
            ),
        }),
        s => Err(DownloadError::Http {
            url: url.to_string(),
            problem: format!("HTTP {s}"),
        }),
    }
}
