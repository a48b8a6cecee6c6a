//! The generated tree's packuments, shaped like the real registry's full documents: per version a
//! complete manifest (repository, scripts, devDependencies, `gitHead`, signatures…), a `time`
//! entry per version, and a readme as long as popular packages carry. The document size comes
//! from the same fields that make real packuments large, not from padding.
//!
//! Each packument is written once per test process as a [`Template`]: JSON text cut where the
//! registry's base URL goes, so that every upstream start (on a new port) only joins the pieces.
//! The text is written directly rather than through `serde_json::Value`: generic code is
//! compiled unoptimised in this test crate, and building ten thousand version manifests as
//! values took seconds.

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use serde_json::{Map, Value, json};
use sha2::Digest as _;

use super::{Profile, Rng};
use crate::support::npm_packages::Package;

/// The license file every tarball carries.
pub const LICENSE: &str = "MIT License\n\nCopyright (c) the pmcache tree fixture authors\n\n\
Permission is hereby granted, free of charge, to any person obtaining a copy of this software \
and associated documentation files (the \"Software\"), to deal in the Software without \
restriction, including without limitation the rights to use, copy, modify, merge, publish, \
distribute, sublicense, and/or sell copies of the Software, and to permit persons to whom the \
Software is furnished to do so, subject to the following conditions:\n\nThe above copyright \
notice and this permission notice shall be included in all copies or substantial portions of \
the Software.\n\nTHE SOFTWARE IS PROVIDED \"AS IS\", WITHOUT WARRANTY OF ANY KIND.\n";

/// Words the generated prose is made of.
const WORDS: [&str; 48] = [
    "the",
    "a",
    "stream",
    "returns",
    "value",
    "options",
    "callback",
    "promise",
    "with",
    "of",
    "when",
    "is",
    "and",
    "to",
    "in",
    "for",
    "buffer",
    "string",
    "object",
    "array",
    "parser",
    "module",
    "function",
    "default",
    "true",
    "false",
    "null",
    "event",
    "listener",
    "emits",
    "error",
    "handles",
    "input",
    "output",
    "fast",
    "small",
    "zero",
    "dependencies",
    "browser",
    "node",
    "supports",
    "async",
    "sync",
    "cache",
    "key",
    "path",
    "match",
    "pattern",
];
/// Tools that show up in devDependencies.
const TOOLS: [&str; 24] = [
    "eslint",
    "mocha",
    "chai",
    "typescript",
    "prettier",
    "jest",
    "nyc",
    "sinon",
    "rimraf",
    "tap",
    "ava",
    "xo",
    "c8",
    "tsd",
    "husky",
    "lint-staged",
    "@types/node",
    "standard",
    "benchmark",
    "webpack",
    "rollup",
    "esbuild",
    "vitest",
    "coveralls",
];
const TOOL_PREFIXES: [&str; 6] = [
    "eslint-plugin",
    "eslint-config",
    "@types",
    "babel-plugin",
    "rollup-plugin",
    "karma",
];

/// What a packument says about a package beyond its versions.
pub struct Details {
    pub description: String,
    readme: String,
    keywords: Vec<String>,
    dev_dependencies: Map<String, Value>,
    /// The `exports` map every version declares, if any.
    exports: Option<Map<String, Value>>,
    /// Every version in publish order, as the registry lists them.
    order: Vec<String>,
}

impl Details {
    /// Details for a package of `profile` whose versions are `order`: the bigger the package,
    /// the longer its readme, development toolchain and `exports` map, as with real packages.
    pub fn generate(rng: &mut Rng, name: &str, profile: Profile, order: Vec<String>) -> Self {
        let (readme_bytes, tools, exports) = match profile {
            Profile::Giant => (rng.between(60_000, 150_000), rng.between(45, 90), 0),
            Profile::Heavy => (
                rng.between(8_000, 30_000),
                rng.between(12, 30),
                rng.between(60, 200),
            ),
            Profile::Medium if rng.chance(0.5) => (
                rng.between(4_000, 20_000),
                rng.between(8, 25),
                rng.between(5, 40),
            ),
            Profile::Medium => (rng.between(4_000, 20_000), rng.between(8, 25), 0),
            Profile::Light => (rng.between(800, 6_000), rng.between(3, 15), 0),
        };
        let description = sentence(rng, 6, 14);
        Self {
            readme: readme(rng, name, &description, readme_bytes as usize),
            keywords: (0..rng.between(3, 8))
                .map(|_| (*rng.pick(&WORDS)).to_owned())
                .collect(),
            dev_dependencies: dev_dependencies(rng, tools as usize),
            exports: (exports > 0).then(|| exports_map(rng, exports as usize)),
            description,
            order,
        }
    }
}

/// A packument's JSON text with the registry base URL left out: the pieces between which it goes.
pub struct Template {
    pieces: Vec<Bytes>,
}

impl Template {
    /// The document with `base` in every tarball URL.
    pub fn render(&self, base: &str) -> Bytes {
        let length = self.pieces.iter().map(Bytes::len).sum::<usize>()
            + base.len() * self.pieces.len().saturating_sub(1);
        let mut document = BytesMut::with_capacity(length);
        for (index, piece) in self.pieces.iter().enumerate() {
            if index > 0 {
                document.extend_from_slice(base.as_bytes());
            }
            document.extend_from_slice(piece);
        }
        document.freeze()
    }
}

/// JSON text being written, cut at each base URL.
#[derive(Default)]
struct Writer {
    pieces: Vec<Bytes>,
    current: String,
}

impl Writer {
    fn raw(&mut self, text: &str) {
        self.current.push_str(text);
    }

    /// `text` as a JSON string.
    fn string(&mut self, text: &str) {
        self.raw(&quote(text));
    }

    /// `"key":` then `value` as a JSON string.
    fn field(&mut self, key: &str, value: &str) {
        self.raw(&format!("{}:", quote(key)));
        self.string(value);
    }

    /// Where the base URL goes.
    fn base(&mut self) {
        let piece = std::mem::take(&mut self.current);
        self.pieces.push(Bytes::from(piece));
    }

    fn finish(mut self) -> Template {
        self.base();
        Template {
            pieces: self.pieces,
        }
    }
}

/// `text` as a JSON string literal (serde_json's escaping, run by its own optimised code).
fn quote(text: &str) -> String {
    Value::from(text).to_string()
}

/// The fields every version of a package repeats, as JSON text.
struct Shared {
    /// From `description` to `engines`, without the dependencies.
    head: String,
    /// `_nodeVersion` to the end of a manifest, after `dist`.
    tail: String,
}

impl Shared {
    fn new(name: &str, details: &Details) -> Self {
        let basename = name.rsplit('/').next().unwrap_or(name);
        let home = format!("https://github.com/tree-fixtures/{basename}");
        let maintainer = json!({"name": format!("{basename}-bot"), "email": format!("bot@{basename}.example.com")});
        let mut head = json!({
            "description": details.description,
            "keywords": details.keywords,
            "homepage": format!("{home}#readme"),
            "bugs": {"url": format!("{home}/issues")},
            "license": "MIT",
            "author": {"name": format!("{basename} maintainers"), "email": format!("{basename}@example.com")},
            "main": "index.js",
            "repository": {"type": "git", "url": format!("git+{home}.git")},
            "scripts": {"test": "mocha test/*.js", "lint": "eslint .", "build": "tsc -p ."},
            "devDependencies": details.dev_dependencies,
            "engines": {"node": ">=14"},
        });
        if let Some(exports) = &details.exports {
            head["exports"] = Value::Object(exports.clone());
        }
        let tail = json!({
            "_npmUser": maintainer,
            "directories": {},
            "maintainers": [maintainer],
            "_hasShrinkwrap": false,
        });
        Self {
            head: inner(&head),
            tail: inner(&tail),
        }
    }
}

/// The members of a JSON object, without its braces.
fn inner(object: &Value) -> String {
    let text = object.to_string();
    text[1..text.len() - 1].to_owned()
}

/// The full packument of `name`, with the base URL left out of its tarball URLs.
pub fn template(name: &str, package: &Package, details: &Details) -> Template {
    let shared = Shared::new(name, details);
    let mut out = Writer::default();
    out.raw("{");
    out.field("_id", name);
    out.raw(",");
    let revision = hex::encode(sha1::Sha1::digest(name.as_bytes()));
    out.field(
        "_rev",
        &format!("{}-{}", details.order.len(), &revision[..32]),
    );
    out.raw(",");
    out.field("name", name);
    out.raw(&format!(
        ",\"dist-tags\":{},\"versions\":{{",
        Value::Object(package.dist_tags.clone())
    ));
    for (index, version) in details.order.iter().enumerate() {
        if index > 0 {
            out.raw(",");
        }
        out.string(version);
        out.raw(":");
        manifest(&mut out, name, version, package, &shared);
    }
    out.raw("},\"time\":{");
    out.field("modified", &package.modified);
    out.raw(",");
    out.field("created", &package.created);
    for version in &details.order {
        out.raw(",");
        out.field(version, &package.versions[version].time);
    }
    out.raw("},");
    out.raw(&shared.head);
    out.raw(",");
    out.field("readme", &details.readme);
    out.raw(",\"readmeFilename\":\"README.md\"}");
    out.finish()
}

/// One version's manifest, as the registry's full packument carries it.
fn manifest(out: &mut Writer, name: &str, version: &str, package: &Package, shared: &Shared) {
    let tarball = &package.versions[version];
    let id = format!("{name}@{version}");
    out.raw("{");
    out.field("name", name);
    out.raw(",");
    out.field("version", version);
    out.raw(",");
    out.raw(&shared.head);
    if !tarball.dependencies.is_empty() {
        out.raw(&format!(
            ",\"dependencies\":{}",
            Value::Object(tarball.dependencies.clone())
        ));
    }
    out.raw(",");
    out.field("gitHead", &hex::encode(sha1::Sha1::digest(id.as_bytes())));
    out.raw(",");
    out.field("_id", &id);
    out.raw(",\"_nodeVersion\":\"18.20.4\",\"_npmVersion\":\"10.7.0\",\"dist\":{");
    out.field("integrity", &tarball.integrity);
    out.raw(",");
    out.field("shasum", &tarball.shasum);
    out.raw(",\"tarball\":\"");
    out.base();
    // Names and file names are URL-safe ASCII: nothing in them needs escaping in JSON.
    out.raw(&tarball.registry_path());
    out.raw(&format!(
        "\",\"fileCount\":{},\"unpackedSize\":{},\"signatures\":[{{\"keyid\":\"SHA256:tree-fixture-signing-key\",",
        tarball.file_count, tarball.unpacked_size
    ));
    let signature = sha2::Sha512::digest(format!("signed {id}").as_bytes());
    out.field(
        "sig",
        &base64::engine::general_purpose::STANDARD.encode(signature),
    );
    out.raw("}]},");
    out.raw(&shared.tail);
    out.raw("}");
}

/// `tools` development dependencies with caret ranges.
fn dev_dependencies(rng: &mut Rng, tools: usize) -> Map<String, Value> {
    let mut found = Map::new();
    while found.len() < tools {
        let name = if rng.chance(0.4) {
            (*rng.pick(&TOOLS)).to_owned()
        } else {
            let prefix = rng.pick(&TOOL_PREFIXES);
            let word = rng.pick(&WORDS);
            if prefix.starts_with('@') {
                format!("{prefix}/{word}")
            } else {
                format!("{prefix}-{word}")
            }
        };
        let range = format!(
            "^{}.{}.{}",
            rng.between(1, 9),
            rng.between(0, 20),
            rng.between(0, 9)
        );
        found.insert(name, range.into());
    }
    found
}

/// An `exports` map of `entries` subpaths besides the package itself, each with conditions for
/// types, ES modules and CommonJS, as packages of many helpers publish them.
fn exports_map(rng: &mut Rng, entries: usize) -> Map<String, Value> {
    let conditions = |stem: &str| {
        json!({
            "types": format!("./{stem}.d.ts"),
            "import": format!("./esm/{stem}.mjs"),
            "require": format!("./{stem}.js"),
            "default": format!("./{stem}.js"),
        })
    };
    let mut map = Map::new();
    map.insert("./package.json".to_owned(), "./package.json".into());
    map.insert(".".to_owned(), conditions("index"));
    while map.len() < entries + 2 {
        let stem = format!(
            "helpers/{}-{}{}",
            rng.pick(&WORDS),
            rng.pick(&WORDS),
            rng.between(0, 99)
        );
        map.insert(format!("./{stem}"), conditions(&stem));
    }
    map
}

/// Markdown of about `bytes` bytes: a title, the description, then sections of prose and code.
fn readme(rng: &mut Rng, name: &str, description: &str, bytes: usize) -> String {
    let mut text = format!(
        "# {name}\n\n{description}\n\n## Install\n\n```\nnpm install {name}\n```\n\n## Usage\n\n"
    );
    let mut section = 0;
    while text.len() < bytes {
        section += 1;
        text.push_str(&format!("### {}\n\n", sentence(rng, 2, 5)));
        for _ in 0..rng.between(1, 3) {
            text.push_str(&sentence(rng, 30, 90));
            text.push_str("\n\n");
        }
        text.push_str(&format!(
            "```js\nconst {{ {} }} = require('{name}');\n{}(options{section});\n```\n\n",
            rng.pick(&WORDS),
            rng.pick(&WORDS)
        ));
    }
    text
}

/// A sentence of `low..=high` words, capitalised and ended.
fn sentence(rng: &mut Rng, low: u64, high: u64) -> String {
    let words: Vec<&str> = (0..rng.between(low, high))
        .map(|_| *rng.pick(&WORDS))
        .collect();
    let mut text = words.join(" ");
    if let Some(first) = text.get_mut(0..1) {
        first.make_ascii_uppercase();
    }
    text.push('.');
    text
}
