//! A fixture gem server on loopback, under the path prefix `/upstream/`, answering like
//! rubygems.org (protocol brief §1–§5): the compact index (`versions`, `info/NAME`, `names`),
//! generated here from the fixture manifest and served with an MD5 `ETag`, `If-None-Match` → 304,
//! byte ranges and `Repr-Digest`; `.gem` files and quick gemspecs; the legacy `.4.8.gz` indexes
//! made by `gem generate_index` (no `Content-Encoding`); `HEAD /`; and a 404 for the dependency
//! API, which rubygems.org has removed; and the versions API (`api/v1/versions/NAME.json`, each
//! published build with its `created_at`). Tests publish held gems, which appends to `versions` and
//! `info/NAME` as a release on rubygems.org does; change a version's `created_at`; inject faults per file; turn validators, ranges
//! or digests off; and stop and restart the server. Every request is logged with the headers
//! Bundler revalidates with.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Result, bail};
use base64::Engine as _;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{
    ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, HeaderMap, HeaderValue,
    IF_NONE_MATCH, RANGE,
};
use hyper::{Method, Request, Response, StatusCode};

pub use super::fixture_server::Fault;
use super::fixture_server::{
    Body, Faults, FixtureServer, Handler, RequestLog, corrupt, empty_body, lock, status_only,
    streamed_body,
};
use super::rubygems_gems::{Gem, Gems, LEGACY_INDEXES, gems};

/// The path prefix the gem server lives under.
const PREFIX: &str = "/upstream/";
/// The `created_at` preamble of `versions`: the time of its last monthly recompute.
pub const VERSIONS_CREATED_AT: &str = "2024-06-02T00:00:00Z";
/// Header lines after `created_at`, before `---`: 1.5 KiB that clients ignore.
const VERSIONS_PADDING: &str = concat!(
    "x-fixture-padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n",
    "x-fixture-padding: bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\n",
    "x-fixture-padding: cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc\n",
    "x-fixture-padding: dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd\n",
    "x-fixture-padding: eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee\n",
    "x-fixture-padding: ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff\n",
    "x-fixture-padding: gggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggggg\n",
    "x-fixture-padding: hhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhh\n",
    "x-fixture-padding: iiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiii\n",
    "x-fixture-padding: jjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjj\n",
    "x-fixture-padding: kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk\n",
    "x-fixture-padding: llllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllll\n",
    "x-fixture-padding: mmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmm\n",
    "x-fixture-padding: nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn\n",
    "x-fixture-padding: oooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooo\n",
);
/// What rubygems.org sends for the compact index.
const COMPACT_INDEX_TYPE: &str = "text/plain; charset=utf-8";
/// The body of the dependency API's 404, in rubygems.org's words.
pub const DEPENDENCY_API_GONE: &str =
    "The dependency API has gone away. Use the compact index instead.\n";
/// What `/` answers (`gem install` probes it with `HEAD`).
const ROOT_BODY: &str = "proxfix fixture gem server\n";

/// What a request asked for, by path below the prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `/`.
    Root,
    /// `versions`.
    Versions,
    /// `info/NAME`, known or not.
    Info(String),
    /// `names`.
    Names,
    /// `gems/FILENAME`.
    Gem(String),
    /// `quick/Marshal.4.8/FILENAME`.
    Gemspec(String),
    /// One of the `.4.8.gz` files.
    LegacyIndex(String),
    /// `api/v1/dependencies` (Marshal or `.json`).
    Dependencies,
    /// `api/v1/versions/NAME.json`.
    VersionsApi(String),
    /// Anything else.
    Other,
}

/// One request as the server saw it, and its answer's status.
#[derive(Clone, Debug)]
pub struct Logged {
    pub method: Method,
    /// Path and query, as sent.
    pub target: String,
    pub kind: Kind,
    /// The `Range` header, if any.
    pub range: Option<String>,
    /// The `If-None-Match` header, if any.
    pub if_none_match: Option<String>,
    pub status: StatusCode,
    /// Every request header, for the checks the fields above do not cover.
    pub headers: HeaderMap,
}

impl fmt::Display for Logged {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{} {} ({:?}) -> {}",
            self.method,
            self.target,
            self.kind,
            self.status.as_u16()
        )?;
        if let Some(range) = &self.range {
            write!(formatter, " [Range: {range}]")?;
        }
        if let Some(tag) = &self.if_none_match {
            write!(formatter, " [If-None-Match: {tag}]")?;
        }
        Ok(())
    }
}

/// The published set and the compact index files as they stand.
struct CompactIndex {
    /// Full names of the published gems.
    published: HashSet<String>,
    /// `versions`: rendered once, then only appended to.
    versions: String,
    /// `info/NAME` bodies, by name.
    info: BTreeMap<String, String>,
}

impl CompactIndex {
    /// The index of every gem not held back: `versions` as a monthly recompute writes it, one line
    /// per name (sorted), versions in publication order.
    fn new(gems: &Gems) -> Self {
        let published_gems: Vec<&Gem> = gems.gems.iter().filter(|gem| !gem.held).collect();
        let mut info: BTreeMap<String, String> = BTreeMap::new();
        for gem in &published_gems {
            let body = info
                .entry(gem.name.clone())
                .or_insert_with(|| "---\n".to_owned());
            body.push_str(&gem.info_line);
            body.push('\n');
        }
        // Clients skip everything before `---`: the padding makes the file long enough for
        // pmcache to keep a gzip copy, as it does for the real (tens of megabytes) file.
        let mut versions = format!("created_at: {VERSIONS_CREATED_AT}\n{VERSIONS_PADDING}---\n");
        for (name, body) in &info {
            let entries: Vec<String> = published_gems
                .iter()
                .filter(|gem| &gem.name == name)
                .map(|gem| gem.versions_entry())
                .collect();
            let _ = writeln!(versions, "{name} {} {}", entries.join(","), md5_hex(body));
        }
        Self {
            published: published_gems
                .iter()
                .map(|gem| gem.full_name.clone())
                .collect(),
            versions,
            info,
        }
    }

    /// Publishes `gem` as a release on rubygems.org does: its line appended to `info/NAME`, and
    /// `NAME VERSION MD5` (the MD5 of the new `info/NAME`) appended to `versions`.
    fn publish(&mut self, gem: &Gem) -> Result<()> {
        if !self.published.insert(gem.full_name.clone()) {
            bail!("{} is already published", gem.full_name);
        }
        let body = self
            .info
            .entry(gem.name.clone())
            .or_insert_with(|| "---\n".to_owned());
        body.push_str(&gem.info_line);
        body.push('\n');
        let digest = md5_hex(body);
        let _ = writeln!(
            self.versions,
            "{} {} {digest}",
            gem.name,
            gem.versions_entry()
        );
        Ok(())
    }

    /// Forgets `name` as if it had never been published here: its `versions` lines, its
    /// `info/NAME` and its files.
    fn unlist(&mut self, name: &str) {
        let prefix = format!("{name} ");
        self.versions = self
            .versions
            .lines()
            .filter(|line| !line.starts_with(&prefix))
            .map(|line| format!("{line}\n"))
            .collect();
        self.info.remove(name);
        let own = |full_name: &String| {
            full_name
                .strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('-'))
        };
        self.published.retain(|full_name| !own(full_name));
    }

    /// `names`: every published name, sorted.
    fn names(&self) -> String {
        let mut text = "---\n".to_owned();
        for name in self.info.keys() {
            text.push_str(name);
            text.push('\n');
        }
        text
    }
}

/// State shared by the server and the test.
struct State {
    gems: &'static Gems,
    index: Mutex<CompactIndex>,
    /// `ETag` on the compact index, and 304 for a matching `If-None-Match`.
    validators: AtomicBool,
    /// 206 for a `Range` on the compact index (else the whole file with 200).
    ranges: AtomicBool,
    /// `Digest` and `Repr-Digest` on the compact index.
    digests: AtomicBool,
    /// `created_at` overrides by `(name, version)`, every platform's build: None leaves the
    /// field out.
    times: Mutex<HashMap<(String, String), Option<String>>>,
    faults: Faults,
    /// The status the versions API answers every gem with instead of its JSON (a rate limit,
    /// an outage), if any.
    versions_api_status: Mutex<Option<StatusCode>>,
    log: RequestLog<Logged>,
}

impl State {
    fn published(&self, gem: &Gem) -> bool {
        lock(&self.index).published.contains(&gem.full_name)
    }
}

/// The running fixture. Dropping it stops the server and prints its request log.
pub struct RubygemsUpstream {
    state: Arc<State>,
    server: FixtureServer,
}

impl RubygemsUpstream {
    /// Starts the gem server on `127.0.0.1:0` with every gem but the held ones published.
    pub fn start() -> Result<Self> {
        let gems = gems()?;
        let state = Arc::new(State {
            gems,
            index: Mutex::new(CompactIndex::new(gems)),
            validators: AtomicBool::new(true),
            ranges: AtomicBool::new(true),
            digests: AtomicBool::new(true),
            times: Mutex::default(),
            faults: Faults::default(),
            versions_api_status: Mutex::default(),
            log: RequestLog::default(),
        });
        let server = FixtureServer::bind("rubygems-upstream", 1)?.serve(vec![handler(&state)]);
        Ok(Self { state, server })
    }

    /// `http://127.0.0.1:PORT/upstream/`: the source URL to configure as upstream.
    pub fn base_url(&self) -> String {
        format!("http://{}{PREFIX}", self.addr())
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr(0)
    }

    /// The fixture gems (held ones included).
    pub fn gems(&self) -> &'static Gems {
        self.state.gems
    }

    /// Publishes the held gem `full_name`: `versions` and `info/NAME` grow by its line, and its
    /// `.gem` and quick gemspec are served from now on. The legacy indexes do not change.
    pub fn publish(&self, full_name: &str) -> Result<()> {
        let gem = self.state.gems.gem(full_name)?;
        lock(&self.state.index).publish(gem)
    }

    /// Makes this server one that never had the gem `name` (a private gem, on the public
    /// server): it is in no index and its files are 404.
    pub fn unlist(&self, name: &str) {
        lock(&self.state.index).unlist(name);
    }

    /// Sets the `created_at` the versions API gives every build of `name` `version` (RFC 3339,
    /// as rubygems.org writes it: `2026-12-07T16:20:00.000Z`); None leaves it out, as for a
    /// version the API does not know.
    pub fn retime(&self, name: &str, version: &str, time: Option<&str>) -> Result<()> {
        if self
            .state
            .gems
            .versions_of(name)
            .all(|gem| gem.version != version)
        {
            bail!("the fixture has no {name} {version}");
        }
        lock(&self.state.times).insert(
            (name.to_owned(), version.to_owned()),
            time.map(str::to_owned),
        );
        Ok(())
    }

    /// Whether `full_name` is served.
    pub fn is_published(&self, full_name: &str) -> bool {
        lock(&self.state.index).published.contains(full_name)
    }

    /// `versions` exactly as served now.
    pub fn versions(&self) -> Bytes {
        Bytes::from(lock(&self.state.index).versions.clone())
    }

    /// `info/NAME` exactly as served now, if `name` has a published version.
    pub fn info(&self, name: &str) -> Option<Bytes> {
        lock(&self.state.index)
            .info
            .get(name)
            .map(|body| Bytes::from(body.clone()))
    }

    /// `names` exactly as served now.
    pub fn names(&self) -> Bytes {
        Bytes::from(lock(&self.state.index).names())
    }

    /// The `.gem` of `full_name` as served without faults, if it is published.
    pub fn gem_file(&self, full_name: &str) -> Option<Bytes> {
        let gem = self.state.gems.gem(full_name).ok()?;
        self.state.published(gem).then(|| gem.bytes.clone())
    }

    /// The quick gemspec of `full_name` as served without faults, if it is published.
    pub fn gemspec_file(&self, full_name: &str) -> Option<Bytes> {
        let gem = self.state.gems.gem(full_name).ok()?;
        self.state.published(gem).then(|| gem.gemspec.clone())
    }

    /// The legacy index file `filename` (`specs.4.8.gz`…) as served without faults.
    pub fn legacy_index(&self, filename: &str) -> Option<Bytes> {
        self.state.gems.indexes.get(filename).cloned()
    }

    /// Whether the compact index carries an `ETag` and answers `If-None-Match` with 304 (on at
    /// start); off behaves like an upstream that sends no validators.
    pub fn set_validators(&self, enabled: bool) {
        self.state.validators.store(enabled, Ordering::SeqCst);
    }

    /// Whether a `Range` on the compact index gets a 206 (on at start); off answers every range
    /// with the whole file and 200.
    pub fn set_ranges(&self, enabled: bool) {
        self.state.ranges.store(enabled, Ordering::SeqCst);
    }

    /// Whether the compact index carries `Digest` and `Repr-Digest` (on at start).
    pub fn set_digests(&self, enabled: bool) {
        self.state.digests.store(enabled, Ordering::SeqCst);
    }

    /// Answers every later versions API request with `status` (e.g. 429 or 503) and no body, or
    /// (None) with the versions again.
    pub fn set_versions_api_status(&self, status: Option<StatusCode>) {
        *lock(&self.state.versions_api_status) = status;
    }

    /// Injects `fault` into every later response for `path`, below the prefix
    /// (`gems/proxfix_bad-1.0.0.gem`, `versions`, `info/proxfix_app`, `specs.4.8.gz`…).
    pub fn set_fault(&self, path: &str, fault: Fault) {
        self.state.faults.set(path, fault);
    }

    /// Serves `path` normally again.
    pub fn clear_fault(&self, path: &str) {
        self.state.faults.clear(path);
    }

    /// The exact bytes served for `bytes` under [`Fault::Corrupt`].
    pub fn corrupted(bytes: &[u8]) -> Bytes {
        corrupt(bytes)
    }

    /// A mark for the `*_since` counters: the number of requests seen so far.
    pub fn mark(&self) -> usize {
        self.state.log.mark()
    }

    /// Every request after `mark`.
    pub fn requests_since(&self, mark: usize) -> Vec<Logged> {
        self.state.log.since(mark)
    }

    /// Requests of `kind` after `mark`.
    pub fn count_since(&self, mark: usize, kind: &Kind) -> usize {
        self.state
            .log
            .count_since(mark, |logged| &logged.kind == kind)
    }

    /// Requests of `kind`, ever.
    pub fn count(&self, kind: &Kind) -> usize {
        self.count_since(0, kind)
    }

    /// `.gem` requests (any file) after `mark`.
    pub fn gem_requests_since(&self, mark: usize) -> usize {
        self.state
            .log
            .count_since(mark, |logged| matches!(logged.kind, Kind::Gem(_)))
    }

    /// Every request so far, one per line, for messages.
    pub fn request_log(&self) -> String {
        self.state.log.render()
    }

    /// Closes the listener and every open connection: new connections are refused.
    pub fn stop(&self) {
        self.server.stop();
    }

    /// Listens again on the same port after [`Self::stop`].
    pub fn restart(&self) -> Result<()> {
        self.server.restart()
    }
}

impl Drop for RubygemsUpstream {
    fn drop(&mut self) {
        self.stop();
        self.state.log.print("fixture gem server");
    }
}

/// `"<md5 hex>"`: the `ETag` rubygems.org sends for a compact index body, and the one Bundler
/// <= 2.4 insists on (protocol brief §4).
pub fn etag_of(body: &[u8]) -> String {
    format!("\"{}\"", md5_hex(body))
}

fn md5_hex(body: impl AsRef<[u8]>) -> String {
    use md5::Digest as _;
    hex::encode(md5::Md5::digest(body.as_ref()))
}

fn handler(state: &Arc<State>) -> Handler {
    let state = Arc::clone(state);
    super::fixture_server::handler(move |request| {
        let state = Arc::clone(&state);
        async move { respond(&state, request) }
    })
}

fn respond(state: &State, request: Request<Incoming>) -> Response<Body> {
    let method = request.method().clone();
    let target = request.uri().path_and_query().map_or_else(
        || request.uri().path().to_owned(),
        |target| target.to_string(),
    );
    let path = request.uri().path().to_owned();
    let headers = request.headers().clone();
    let kind = classify(&path);
    let mut response = if method == Method::GET || method == Method::HEAD {
        answer(state, &kind, &path, &headers)
    } else {
        status_only(StatusCode::METHOD_NOT_ALLOWED)
    };
    if method == Method::HEAD {
        *response.body_mut() = empty_body();
    }
    let header_text = |name| {
        headers
            .get(name)
            .map(|value: &HeaderValue| String::from_utf8_lossy(value.as_bytes()).into_owned())
    };
    state.log.push(Logged {
        method,
        target,
        kind,
        range: header_text(RANGE),
        if_none_match: header_text(IF_NONE_MATCH),
        status: response.status(),
        headers,
    });
    response
}

/// What `path` asks for, by the routes of rubygems.org (protocol brief §1).
fn classify(path: &str) -> Kind {
    let Some(rest) = path.strip_prefix(PREFIX) else {
        return Kind::Other;
    };
    let file = |prefix: &str, suffix: &str| {
        rest.strip_prefix(prefix)
            .filter(|file| file.ends_with(suffix) && !file.contains('/'))
            .map(str::to_owned)
    };
    match rest {
        "" => Kind::Root,
        "versions" => Kind::Versions,
        "names" => Kind::Names,
        "api/v1/dependencies" | "api/v1/dependencies.json" => Kind::Dependencies,
        _ if file("api/v1/versions/", ".json").is_some_and(|file| file.len() > ".json".len()) => {
            let file = file("api/v1/versions/", ".json").unwrap_or_default();
            Kind::VersionsApi(file.strip_suffix(".json").unwrap_or_default().to_owned())
        }
        _ if LEGACY_INDEXES.contains(&rest) => Kind::LegacyIndex(rest.to_owned()),
        _ => {
            if let Some(name) = file("info/", "").filter(|name| !name.is_empty()) {
                Kind::Info(name)
            } else if let Some(file) = file("gems/", ".gem") {
                Kind::Gem(file)
            } else if let Some(file) = file("quick/Marshal.4.8/", ".gemspec.rz") {
                Kind::Gemspec(file)
            } else {
                Kind::Other
            }
        }
    }
}

/// The answer to a `GET` (or `HEAD`) of `kind` at `path`.
fn answer(state: &State, kind: &Kind, path: &str, headers: &HeaderMap) -> Response<Body> {
    let fault_key = path.strip_prefix(PREFIX).unwrap_or(path);
    let fault = state.faults.get(fault_key);
    match kind {
        Kind::Root => plain(StatusCode::OK, ROOT_BODY),
        Kind::Versions => {
            let body = Bytes::from(lock(&state.index).versions.clone());
            compact_index(state, headers, &body, fault)
        }
        Kind::Names => {
            let body = Bytes::from(lock(&state.index).names());
            compact_index(state, headers, &body, fault)
        }
        Kind::Info(name) => {
            let body = lock(&state.index).info.get(name).cloned();
            match body {
                Some(body) => compact_index(state, headers, &Bytes::from(body), fault),
                None => status_only(StatusCode::NOT_FOUND),
            }
        }
        Kind::Gem(filename) => match state.gems.by_filename(filename) {
            Some(gem) if state.published(gem) => binary(&gem.bytes, fault),
            _ => status_only(StatusCode::NOT_FOUND),
        },
        Kind::Gemspec(filename) => match state.gems.by_gemspec_filename(filename) {
            Some(gem) if state.published(gem) => binary(&gem.gemspec, fault),
            _ => status_only(StatusCode::NOT_FOUND),
        },
        Kind::LegacyIndex(filename) => match state.gems.indexes.get(filename) {
            // Never with Content-Encoding: RubyGems gunzips `.gz` files itself (brief §4).
            Some(bytes) => binary(bytes, fault),
            None => status_only(StatusCode::NOT_FOUND),
        },
        Kind::Dependencies => plain(StatusCode::NOT_FOUND, DEPENDENCY_API_GONE),
        Kind::VersionsApi(name) => {
            let status = *lock(&state.versions_api_status);
            match (status, versions_api(state, name)) {
                (Some(status), _) => status_only(status),
                (None, Some(body)) => json(&body, fault),
                // rubygems.org's words for a gem it does not have.
                (None, None) => plain(StatusCode::NOT_FOUND, "This rubygem could not be found."),
            }
        }
        Kind::Other => status_only(StatusCode::NOT_FOUND),
    }
}

/// What a `Range` header asks of a body of `length` bytes.
#[derive(Debug, PartialEq, Eq)]
enum Slice {
    /// No range, or one this fixture does not parse: the whole body.
    Whole,
    /// Bytes `start..end`.
    Part { start: usize, end: usize },
    /// Starts at or past the end.
    Unsatisfiable,
}

/// `bytes=START-` (what Bundler sends) or `bytes=START-END`; anything else is ignored, as a
/// server may (RFC 9110 §14.2).
fn slice(range: Option<&HeaderValue>, length: usize) -> Slice {
    let Some(spec) = range
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().strip_prefix("bytes="))
    else {
        return Slice::Whole;
    };
    let Some((start, end)) = spec.split_once('-') else {
        return Slice::Whole;
    };
    let Ok(start) = start.trim().parse::<usize>() else {
        return Slice::Whole;
    };
    let end = match end.trim() {
        "" => length,
        last => match last.parse::<usize>() {
            Ok(last) if last >= start => (last + 1).min(length),
            _ => return Slice::Whole,
        },
    };
    if start >= length {
        Slice::Unsatisfiable
    } else {
        Slice::Part { start, end }
    }
}

/// Whether an `If-None-Match` list names `etag` (weak comparison, RFC 9110 §13.1.2).
fn none_match(header: Option<&HeaderValue>, etag: &str) -> bool {
    let Some(list) = header.and_then(|value| value.to_str().ok()) else {
        return false;
    };
    list.split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

/// A compact index file answered like rubygems.org's `render_range`: ETag and digests describe the
/// whole body even on a 206; an unsatisfiable range gets a blank 206 (rack's `get_byte_ranges`
/// returns no ranges, which the controller still treats as a range).
fn compact_index(
    state: &State,
    headers: &HeaderMap,
    body: &Bytes,
    fault: Option<Fault>,
) -> Response<Body> {
    let validators = state.validators.load(Ordering::SeqCst);
    let etag = etag_of(body);
    let mut builder = Response::builder()
        .header(CONTENT_TYPE, COMPACT_INDEX_TYPE)
        .header(ACCEPT_RANGES, "bytes");
    if validators {
        builder = builder.header(ETAG, &etag);
    }
    if state.digests.load(Ordering::SeqCst) {
        use sha2::Digest as _;
        let digest = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(body));
        builder = builder
            .header("Digest", format!("sha-256={digest}"))
            .header("Repr-Digest", format!("sha-256=:{digest}:"));
    }
    if validators && none_match(headers.get(IF_NONE_MATCH), &etag) {
        return builder
            .status(StatusCode::NOT_MODIFIED)
            .body(empty_body())
            .expect("fixture headers are valid");
    }
    let range = if state.ranges.load(Ordering::SeqCst) {
        slice(headers.get(RANGE), body.len())
    } else {
        Slice::Whole
    };
    let (status, sent) = match range {
        Slice::Whole => (StatusCode::OK, body.clone()),
        Slice::Part { start, end } => {
            builder = builder.header(
                CONTENT_RANGE,
                format!("bytes {start}-{}/{}", end - 1, body.len()),
            );
            (StatusCode::PARTIAL_CONTENT, body.slice(start..end))
        }
        Slice::Unsatisfiable => (StatusCode::PARTIAL_CONTENT, Bytes::new()),
    };
    builder
        .status(status)
        .header(CONTENT_LENGTH, sent.len())
        .body(streamed_body(&sent, fault, |_| {}))
        .expect("fixture headers are valid")
}

/// The versions API answer for `name`: each published build, newest first, with its
/// `created_at` (the manifest's, or the one a test set; none when it set None); None when no
/// version of `name` is published.
fn versions_api(state: &State, name: &str) -> Option<Bytes> {
    let times = lock(&state.times);
    let mut entries: Vec<serde_json::Value> = state
        .gems
        .versions_of(name)
        .filter(|gem| state.published(gem))
        .map(|gem| {
            let created_at = match times.get(&(gem.name.clone(), gem.version.clone())) {
                Some(time) => time.clone(),
                None => Some(gem.created_at.clone()),
            };
            let mut entry = serde_json::json!({
                "number": gem.version,
                "platform": gem.platform,
                "prerelease": gem.version.chars().any(|c| c.is_ascii_alphabetic()),
                "sha": gem.sha256,
                "summary": format!("{} fixture", gem.name),
            });
            if let Some(created_at) = created_at {
                entry["created_at"] = created_at.into();
                entry["built_at"] = gem.created_at.clone().into();
            }
            entry
        })
        .collect();
    if entries.is_empty() {
        return None;
    }
    entries.reverse();
    Some(Bytes::from(serde_json::to_vec(&entries).ok()?))
}

/// A JSON answer, whole, with `fault` applied.
fn json(bytes: &Bytes, fault: Option<Fault>) -> Response<Body> {
    Response::builder()
        .header(CONTENT_TYPE, "application/json; charset=utf-8")
        .header(CONTENT_LENGTH, bytes.len())
        .body(streamed_body(bytes, fault, |_| {}))
        .expect("fixture headers are valid")
}

/// An immutable or legacy file: `application/octet-stream`, whole, with `fault` applied.
fn binary(bytes: &Bytes, fault: Option<Fault>) -> Response<Body> {
    Response::builder()
        .header(CONTENT_TYPE, "application/octet-stream")
        .header(CONTENT_LENGTH, bytes.len())
        .body(streamed_body(bytes, fault, |_| {}))
        .expect("fixture headers are valid")
}

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(CONTENT_LENGTH, text.len())
        .body(super::fixture_server::full_body(Bytes::from_static(
            text.as_bytes(),
        )))
        .expect("fixture headers are valid")
}

#[cfg(test)]
mod tests {
    use anyhow::{Context as _, ensure};

    use super::*;
    use crate::support::http::{self, Attempt};
    use crate::support::rubygems_gems::{BAD, BASE, HELD_BASE};
    use crate::support::sha256_hex;

    /// The fixture end to end over HTTP, without a client: the compact index, held gems and
    /// publishing, the switches, faults, the legacy files, the log, and stop/restart.
    #[test]
    fn serves_rubygems_and_obeys_its_controls() -> Result<()> {
        let upstream = RubygemsUpstream::start()?;
        ensure_compact_index(&upstream)?;
        ensure_revalidation(&upstream)?;
        ensure_publishing(&upstream)?;
        ensure_switches(&upstream)?;
        ensure_files(&upstream)?;
        let marked = upstream.mark();
        http::get_with(&upstream.base_url(), &[("x-probe", "1")])?;
        let logged = upstream.requests_since(marked);
        ensure!(
            logged.len() == 1
                && logged[0].kind == Kind::Root
                && logged[0].headers.get("x-probe").is_some(),
            "the log should hold the probe with its headers: {logged:?}"
        );
        ensure!(upstream.request_log().contains("GET /upstream/versions"));
        upstream.stop();
        let refused = !matches!(
            http::attempt(&upstream.base_url()),
            Ok(Attempt::Response(_))
        );
        ensure!(refused, "a stopped server should not answer");
        upstream.restart()?;
        ensure!(http::get(&upstream.base_url())?.status == 200);
        Ok(())
    }

    /// The versions API: each published build with the manifest's `created_at`, newest first;
    /// `retime` changes or removes it; held gems appear once published; unknown gems get 404.
    #[test]
    fn the_versions_api_gives_each_build_its_created_at() -> Result<()> {
        let upstream = RubygemsUpstream::start()?;
        let entries = |name: &str| -> Result<Vec<serde_json::Value>> {
            let response = http::get(&format!(
                "{}api/v1/versions/{name}.json",
                upstream.base_url()
            ))?;
            ensure!(
                response.status == 200,
                "versions API for {name}: {}",
                response.status
            );
            Ok(serde_json::from_slice(&response.body)?)
        };
        let summary = |entries: &[serde_json::Value]| -> Vec<String> {
            entries
                .iter()
                .map(|entry| {
                    format!(
                        "{} {} {}",
                        entry["number"].as_str().unwrap_or("?"),
                        entry["platform"].as_str().unwrap_or("?"),
                        entry["created_at"].as_str().unwrap_or("none")
                    )
                })
                .collect()
        };
        ensure!(
            summary(&entries(BASE)?)
                == [
                    "1.1.0 ruby 2024-06-01T02:00:00Z",
                    "1.0.0 ruby 2024-06-01T01:00:00Z"
                ],
            "{:?}",
            summary(&entries(BASE)?)
        );
        upstream.publish(HELD_BASE)?;
        upstream.retime(BASE, "1.2.0", Some("2026-12-07T16:20:00.123Z"))?;
        upstream.retime(BASE, "1.0.0", None)?;
        ensure!(
            summary(&entries(BASE)?)
                == [
                    "1.2.0 ruby 2026-12-07T16:20:00.123Z",
                    "1.1.0 ruby 2024-06-01T02:00:00Z",
                    "1.0.0 ruby none"
                ],
            "{:?}",
            summary(&entries(BASE)?)
        );
        let native = summary(&entries("proxfix_native")?);
        ensure!(
            native.len() == 2 && native[0].contains("x86_64-linux"),
            "{native:?}"
        );
        ensure!(upstream.retime(BASE, "9.9.9", None).is_err());
        let missing = http::get(&format!("{}api/v1/versions/nope.json", upstream.base_url()))?;
        ensure!(missing.status == 404);
        ensure!(upstream.count(&Kind::VersionsApi(BASE.to_owned())) == 2);
        Ok(())
    }

    /// `versions`, `info/NAME` and `names` as the manifest says, with coherent MD5s.
    fn ensure_compact_index(upstream: &RubygemsUpstream) -> Result<()> {
        let base = upstream.base_url();
        let gems = upstream.gems();
        ensure!(http::send("HEAD", &base, &[], b"")?.status == 200);
        let versions = http::get(&format!("{base}versions"))?;
        ensure!(versions.status == 200 && versions.body == upstream.versions());
        ensure!(versions.header("content-type") == Some(COMPACT_INDEX_TYPE));
        ensure!(versions.header("accept-ranges") == Some("bytes"));
        ensure!(versions.header("etag") == Some(etag_of(&versions.body).as_str()));
        ensure!(
            versions
                .header("repr-digest")
                .is_some_and(|digest| digest.starts_with("sha-256=:"))
        );
        let text = versions.text();
        let mut lines = text.lines();
        ensure!(lines.next() == Some("created_at: 2024-06-02T00:00:00Z"));
        let mut lines = lines.skip_while(|line| line.starts_with("x-fixture-padding: "));
        ensure!(lines.next() == Some("---"));
        for name in gems.names() {
            let published: Vec<&Gem> = gems.versions_of(name).filter(|gem| !gem.held).collect();
            let info = upstream.info(name).context("published name without info")?;
            let served = http::get(&format!("{base}info/{name}"))?;
            ensure!(served.status == 200 && served.body == info);
            let mut expected = "---\n".to_owned();
            for gem in &published {
                ensure!(
                    gem.info_line
                        .ends_with(&format!("created_at:{}", gem.created_at))
                );
                expected.push_str(&gem.info_line);
                expected.push('\n');
            }
            ensure!(info == expected, "info/{name} is {info:?}");
            let entries: Vec<String> = published.iter().map(|gem| gem.versions_entry()).collect();
            let line = format!("{name} {} {}", entries.join(","), md5_hex(&info));
            ensure!(
                text.lines()
                    .filter(|l| l.starts_with(&format!("{name} ")))
                    .eq([line.as_str()]),
                "versions lacks {line:?}:\n{text}"
            );
        }
        ensure!(http::get(&format!("{base}info/nonexistent"))?.status == 404);
        let names = http::get(&format!("{base}names"))?;
        ensure!(names.body == upstream.names());
        ensure!(
            names.text()
                == format!(
                    "---\n{}\n",
                    gems.names().into_iter().collect::<Vec<_>>().join("\n")
                )
        );
        Ok(())
    }

    /// `If-None-Match` with the current ETag gets 304; a range gets 206 with the tail.
    fn ensure_revalidation(upstream: &RubygemsUpstream) -> Result<()> {
        let url = format!("{}versions", upstream.base_url());
        let body = upstream.versions();
        let etag = etag_of(&body);
        let tail = format!("bytes={}-", body.len() - 1);
        let not_modified = http::get_with(&url, &[("if-none-match", &etag), ("range", &tail)])?;
        ensure!(not_modified.status == 304 && not_modified.body.is_empty());
        let partial = http::get_with(&url, &[("if-none-match", "\"other\""), ("range", &tail)])?;
        ensure!(partial.status == 206 && partial.body == body.slice(body.len() - 1..));
        ensure!(
            partial.header("content-range")
                == Some(
                    format!("bytes {}-{}/{}", body.len() - 1, body.len() - 1, body.len()).as_str()
                )
        );
        let beyond = format!("bytes={}-", body.len());
        let blank = http::get_with(&url, &[("range", &beyond)])?;
        ensure!(blank.status == 206 && blank.body.is_empty());
        Ok(())
    }

    /// A held gem is 404 until published; publishing appends to `versions` and `info/NAME`.
    fn ensure_publishing(upstream: &RubygemsUpstream) -> Result<()> {
        let base = upstream.base_url();
        let held = upstream.gems().gem(HELD_BASE)?;
        let gem_url = format!("{base}gems/{}", held.filename());
        let gemspec_url = format!("{base}quick/Marshal.4.8/{}", held.gemspec_filename());
        ensure!(http::get(&gem_url)?.status == 404 && http::get(&gemspec_url)?.status == 404);
        ensure!(!upstream.is_published(HELD_BASE) && upstream.gem_file(HELD_BASE).is_none());
        let before = upstream.versions();
        upstream.publish(HELD_BASE)?;
        ensure!(
            upstream.publish(HELD_BASE).is_err(),
            "a second publish should fail"
        );
        let info = upstream.info(BASE).context("no info for the base")?;
        ensure!(info.ends_with(format!("{}\n", held.info_line).as_bytes()));
        let appended = format!("{BASE} 1.2.0 {}\n", md5_hex(&info));
        ensure!(upstream.versions() == [before.as_ref(), appended.as_bytes()].concat());
        ensure!(http::get(&gem_url)?.body == held.bytes);
        ensure!(http::get(&gemspec_url)?.body == held.gemspec);
        ensure!(upstream.gem_file(HELD_BASE) == Some(held.bytes.clone()));
        ensure!(upstream.gemspec_file(HELD_BASE) == Some(held.gemspec.clone()));
        Ok(())
    }

    /// Validators, ranges and digests can each be turned off.
    fn ensure_switches(upstream: &RubygemsUpstream) -> Result<()> {
        let url = format!("{}versions", upstream.base_url());
        let etag = etag_of(&upstream.versions());
        upstream.set_validators(false);
        upstream.set_ranges(false);
        upstream.set_digests(false);
        let whole = http::get_with(&url, &[("if-none-match", &etag), ("range", "bytes=1-")])?;
        ensure!(whole.status == 200 && whole.body == upstream.versions());
        ensure!(whole.header("etag").is_none() && whole.header("repr-digest").is_none());
        upstream.set_validators(true);
        upstream.set_ranges(true);
        upstream.set_digests(true);
        ensure!(http::get_with(&url, &[("if-none-match", &etag)])?.status == 304);
        Ok(())
    }

    /// `.gem` faults, quick gemspecs, the legacy files and the dependency API.
    fn ensure_files(upstream: &RubygemsUpstream) -> Result<()> {
        let base = upstream.base_url();
        let gems = upstream.gems();
        let bad = gems.gem(&format!("{BAD}-1.0.0"))?;
        let path = format!("gems/{}", bad.filename());
        let marked = upstream.mark();
        upstream.set_fault(&path, Fault::Corrupt);
        let corrupted = http::get(&format!("{base}{path}"))?;
        ensure!(corrupted.body == RubygemsUpstream::corrupted(&bad.bytes));
        ensure!(corrupted.body.len() == bad.bytes.len() && corrupted.body != bad.bytes);
        upstream.clear_fault(&path);
        ensure!(http::get(&format!("{base}{path}"))?.body == bad.bytes);
        ensure!(upstream.gem_requests_since(marked) == 2);
        for gem in &gems.gems {
            ensure!(sha256_hex(&gem.gemspec) == gem.gemspec_sha256);
        }
        for filename in LEGACY_INDEXES {
            let served = http::get(&format!("{base}{filename}"))?;
            ensure!(served.status == 200 && served.header("content-encoding").is_none());
            ensure!(served.header("content-type") == Some("application/octet-stream"));
            ensure!(Some(&served.body) == upstream.legacy_index(filename).as_ref());
            ensure!(&served.body == gems.index(filename)?);
        }
        let gone = http::get(&format!("{base}api/v1/dependencies?gems=proxfix_app"))?;
        ensure!(gone.status == 404 && gone.text() == DEPENDENCY_API_GONE);
        ensure!(upstream.count(&Kind::Dependencies) == 1);
        Ok(())
    }

    #[test]
    fn classifies_like_rubygems_org_routes() -> Result<()> {
        for (path, expected) in [
            ("/upstream/", Kind::Root),
            ("/upstream/versions", Kind::Versions),
            ("/upstream/names", Kind::Names),
            (
                "/upstream/info/proxfix-base",
                Kind::Info("proxfix-base".to_owned()),
            ),
            ("/upstream/info/", Kind::Other),
            (
                "/upstream/gems/proxfix_native-1.0.0-x86_64-linux.gem",
                Kind::Gem("proxfix_native-1.0.0-x86_64-linux.gem".to_owned()),
            ),
            (
                "/upstream/quick/Marshal.4.8/proxfix_app-0.1.0.gemspec.rz",
                Kind::Gemspec("proxfix_app-0.1.0.gemspec.rz".to_owned()),
            ),
            (
                "/upstream/specs.4.8.gz",
                Kind::LegacyIndex("specs.4.8.gz".to_owned()),
            ),
            ("/upstream/api/v1/dependencies", Kind::Dependencies),
            ("/upstream/gems/a/b.gem", Kind::Other),
            ("/elsewhere/versions", Kind::Other),
        ] {
            let kind = classify(path);
            anyhow::ensure!(
                kind == expected,
                "{path} -> {kind:?}, expected {expected:?}"
            );
        }
        Ok(())
    }

    #[test]
    fn slices_like_bundler_asks() -> Result<()> {
        let header = |text: &str| HeaderValue::from_str(text);
        anyhow::ensure!(slice(None, 10) == Slice::Whole);
        anyhow::ensure!(slice(Some(&header("bytes=9-")?), 10) == Slice::Part { start: 9, end: 10 });
        anyhow::ensure!(slice(Some(&header("bytes=2-4")?), 10) == Slice::Part { start: 2, end: 5 });
        anyhow::ensure!(slice(Some(&header("bytes=10-")?), 10) == Slice::Unsatisfiable);
        anyhow::ensure!(slice(Some(&header("bytes=-5")?), 10) == Slice::Whole);
        anyhow::ensure!(slice(Some(&header("items=1-")?), 10) == Slice::Whole);
        Ok(())
    }

    #[test]
    fn matches_if_none_match_lists() -> Result<()> {
        let header = HeaderValue::from_static("\"aa\", W/\"bb\"");
        anyhow::ensure!(none_match(Some(&header), "\"bb\""));
        anyhow::ensure!(!none_match(Some(&header), "\"cc\""));
        anyhow::ensure!(!none_match(None, "\"aa\""));
        Ok(())
    }
}
