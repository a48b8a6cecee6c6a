//! The upstream fault matrix: every way an upstream can fail (error statuses, stalls, cut or
//! mis-announced bodies, wrong bytes, gzip bombs, oversized pages, refused or silent
//! connections, names that never resolve) against the answer pmcache promises for it: a
//! 502/503/504 with a reason when nothing is cached, the stale copy when a page is, and a failed
//! download that stores nothing for artifacts. Never a 404, never a panic.

use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, ensure};

use crate::support::fault_upstream::{
    self, Behaviour, FaultUpstream, JSON_TYPE, Unanswering, refusing_addr,
};
use crate::support::http;
use crate::support::pmcache::{self, Pmcache};
use crate::support::{sha256_hex, wait_until};

/// An upstream whose name never resolves: `.invalid` is reserved for that (RFC 6761 §6.4).
const UNRESOLVABLE_HOST: &str = "pmcache-fault.invalid";
/// The timeouts pmcache runs with here: each stall costs one of them.
const TIMEOUT: &str = "1s";

/// One test's world: the fault upstream, and pmcache in front of it.
type Case = crate::support::case::Case<FaultUpstream>;

/// What pmcache runs with here besides its upstream: pages revalidated on every request,
/// one-second timeouts, a 64 KiB document limit.
const SETTINGS: [(&str, &str); 4] = [
    ("PMCACHE_PYPI_METADATA_TTL", "0s"),
    ("PMCACHE_UPSTREAM_CONNECT_TIMEOUT", TIMEOUT),
    ("PMCACHE_UPSTREAM_READ_TIMEOUT", TIMEOUT),
    ("PMCACHE_UPSTREAM_MAX_DOCUMENT_SIZE", "64KiB"),
];

impl Case {
    /// The fault upstream, and pmcache in front of it with [`SETTINGS`] and `extra`.
    fn start(extra: &[(&str, &str)]) -> Result<Self> {
        Case::faults(&[&SETTINGS[..], extra].concat())
    }
}

/// pmcache with only the PyPI frontend, [`SETTINGS`] and `extra`, in front of `upstream`: a URL
/// no fixture answers at.
fn serve_unreachable(
    upstream: &str,
    extra: &[(&str, &str)],
) -> Result<crate::support::case::Case<()>> {
    crate::support::case::Case::new(())?.serve(&unreachable_settings(upstream, extra))
}

/// The settings of [`serve_unreachable`].
fn unreachable_settings<'a>(
    upstream: &'a str,
    extra: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut settings = vec![
        ("PMCACHE_NPM_ENABLED", "false"),
        ("PMCACHE_RUBYGEMS_ENABLED", "false"),
        ("PMCACHE_PACKAGIST_ENABLED", "false"),
        ("PMCACHE_PYPI_UPSTREAM", upstream),
    ];
    settings.extend_from_slice(&SETTINGS);
    settings.extend_from_slice(extra);
    settings
}

/// GETs `project`'s page through pmcache as PEP 691 JSON.
fn get_page(pmcache: &Pmcache, project: &str) -> Result<http::Response> {
    let url = format!("{}{project}/", pmcache.pypi_index_url());
    http::get_with(&url, &[("accept", JSON_TYPE)])
}

/// GETs `project`'s page, which must be a complete 200.
fn page_ok(pmcache: &Pmcache, project: &str) -> Result<http::Response> {
    let response = get_page(pmcache, project)?;
    ensure!(
        response.is_complete_ok(),
        "page of {project}: {}",
        response.describe()
    );
    Ok(response)
}

/// The absolute pmcache URL of `project`'s one file, as its page (fetched now) links it.
fn file_url(pmcache: &Pmcache, project: &str) -> Result<String> {
    let page = page_ok(pmcache, project)?;
    let json: serde_json::Value = serde_json::from_slice(&page.body)?;
    let link = json["files"][0]["url"]
        .as_str()
        .with_context(|| format!("page of {project} has no file: {}", page.describe()))?;
    let link = link.split('#').next().unwrap_or_default();
    ensure!(
        link.starts_with("/pypi/files/"),
        "file link {link} is not rewritten to pmcache"
    );
    Ok(format!("{}{link}", pmcache.base_url()))
}

/// Whether an error answer must carry `Retry-After`.
#[derive(Clone, Copy, Debug)]
enum Wait {
    /// Not promised (retrying at once would fail the same way).
    Unspecified,
    /// Waiting helps: some number of seconds.
    Some,
    /// The upstream's own value.
    Exactly(&'static str),
}

/// The answer a client gets when the upstream fails and nothing is cached.
#[derive(Clone, Copy, Debug)]
struct GatewayError {
    /// Acceptable statuses (more than one only where the kernel decides how the fault shows).
    statuses: &'static [u16],
    wait: Wait,
    /// A word of the reason that names the upstream's problem.
    mentions: &'static str,
}

const fn gateway(statuses: &'static [u16], wait: Wait, mentions: &'static str) -> GatewayError {
    GatewayError {
        statuses,
        wait,
        mentions,
    }
}

/// Timeouts are 504 and worth waiting for.
const TIMED_OUT: GatewayError = gateway(&[504], Wait::Some, "did not answer");

/// A fault of one project's page, and the answer when the page is not cached.
struct PageFault {
    project: &'static str,
    behaviour: Behaviour,
    uncached: GatewayError,
}

/// Every page fault the fault upstream can produce, one project each.
fn page_faults() -> Vec<PageFault> {
    let fault = |project, behaviour, uncached| PageFault {
        project,
        behaviour,
        uncached,
    };
    vec![
        fault(
            "status500",
            Behaviour::Status(500, Vec::new()),
            gateway(&[502], Wait::Some, "500"),
        ),
        fault(
            "status502",
            Behaviour::Status(502, Vec::new()),
            gateway(&[502], Wait::Some, "502"),
        ),
        fault(
            "status503",
            Behaviour::Status(503, Vec::new()),
            gateway(&[503], Wait::Some, "503"),
        ),
        fault(
            "status429",
            Behaviour::status_retry_after(429, 7),
            gateway(&[503], Wait::Exactly("7"), "429"),
        ),
        fault("stallheaders", Behaviour::StallBeforeHeaders, TIMED_OUT),
        fault("stallbody", Behaviour::StallMidBody, TIMED_OUT),
        fault(
            "truncate",
            Behaviour::Truncate,
            gateway(&[502], Wait::Unspecified, "broke off"),
        ),
        // The client reads only the announced half: a cut JSON document.
        fault(
            "longer",
            Behaviour::LongerThanAnnounced,
            gateway(&[502], Wait::Unspecified, "malformed"),
        ),
        fault(
            "shorter",
            Behaviour::ShorterThanAnnounced,
            gateway(&[502], Wait::Unspecified, "broke off"),
        ),
        fault(
            "wrongbytes",
            Behaviour::WrongBytes,
            gateway(&[502], Wait::Unspecified, "malformed"),
        ),
        // A redirect to itself, which a client following redirects never gets out of.
        fault(
            "redirectloop",
            Behaviour::Status(
                302,
                vec![("Location".to_owned(), "/simple/redirectloop/".to_owned())],
            ),
            gateway(&[502], Wait::Unspecified, "redirected"),
        ),
        fault(
            "gzipbomb",
            Behaviour::GzipBomb,
            gateway(&[502], Wait::Unspecified, "limit"),
        ),
        fault(
            "huge",
            Behaviour::Huge,
            gateway(&[502], Wait::Unspecified, "limit"),
        ),
    ]
}

/// `response` is the promised gateway error: the status, `Retry-After` where waiting helps, and
/// one line of text/plain naming the upstream (`upstream_name`) and its problem.
fn ensure_gateway_error(
    response: &http::Response,
    expected: &GatewayError,
    upstream_name: &str,
    what: &str,
) -> Result<()> {
    let context = || format!("{what}: {}", response.describe());
    ensure!(
        expected.statuses.contains(&response.status),
        "expected HTTP {:?}; {}",
        expected.statuses,
        context()
    );
    let line = reason_line(response).with_context(context)?;
    for word in ["upstream", upstream_name, expected.mentions] {
        ensure!(
            line.contains(word),
            "the reason lacks {word:?}; {}",
            context()
        );
    }
    let retry_after = response.header("retry-after");
    match expected.wait {
        Wait::Unspecified => {}
        Wait::Some => ensure!(
            retry_after
                .and_then(|value| value.parse::<u64>().ok())
                .is_some(),
            "no Retry-After in seconds; {}",
            context()
        ),
        Wait::Exactly(seconds) => ensure!(
            retry_after == Some(seconds),
            "expected Retry-After: {seconds} (the upstream's); {}",
            context()
        ),
    }
    Ok(())
}

/// The one line of text/plain an error answer gives as its reason.
fn reason_line(response: &http::Response) -> Result<String> {
    let content_type = response.header("content-type").unwrap_or_default();
    ensure!(
        content_type.starts_with("text/plain"),
        "the reason is not text/plain"
    );
    let reason = response.text();
    let line = reason.trim_end();
    ensure!(
        !line.is_empty() && !line.contains('\n'),
        "the reason is not one line"
    );
    Ok(line.to_owned())
}

/// `response` is a complete 200 with `cached`'s body, marked stale.
fn ensure_stale(response: &http::Response, cached: &http::Response, what: &str) -> Result<()> {
    ensure!(
        response.is_complete_ok() && response.header("x-pmcache-stale") == Some("1"),
        "{what}: expected the cached page marked stale, got {}",
        response.describe()
    );
    ensure!(
        response.body == cached.body,
        "{what}: the stale body differs from the cached one: {}",
        response.describe()
    );
    Ok(())
}

/// pmcache still answers, and nothing in it panicked.
fn ensure_still_serving(pmcache: &Pmcache) -> Result<()> {
    let health = http::get(&format!("{}/healthz", pmcache.base_url()))?;
    ensure!(
        health.is_complete_ok(),
        "/healthz after the faults: {}",
        health.describe()
    );
    ensure!(
        !pmcache.log_text().contains("panicked"),
        "pmcache panicked (see its log)"
    );
    Ok(())
}

#[test]
fn uncached_page_faults_are_gateway_errors_with_a_reason() -> Result<()> {
    let case = Case::start(&[])?;
    let authority = case.upstream.authority();
    for fault in page_faults() {
        case.upstream
            .set_page(fault.project, fault.behaviour.clone());
        let asked = case.upstream.page_requests(fault.project);
        let response = get_page(case.pmcache(), fault.project)?;
        let what = format!("{:?} on an uncached page", fault.behaviour);
        ensure_gateway_error(&response, &fault.uncached, &authority, &what)?;
        ensure!(
            case.upstream.page_requests(fault.project) > asked,
            "{what}: pmcache never asked the upstream"
        );
    }
    ensure_still_serving(case.pmcache())
}

#[test]
fn cached_pages_are_served_stale_through_every_fault() -> Result<()> {
    let case = Case::start(&[])?;
    for fault in page_faults() {
        let cached = page_ok(case.pmcache(), fault.project)?;
        ensure!(
            cached.header("x-pmcache-stale").is_none(),
            "a fresh fetch of {} is marked stale: {}",
            fault.project,
            cached.describe()
        );
        case.upstream
            .set_page(fault.project, fault.behaviour.clone());
        let asked = case.upstream.page_requests(fault.project);
        let response = get_page(case.pmcache(), fault.project)?;
        let what = format!("{:?} on a cached page", fault.behaviour);
        ensure_stale(&response, &cached, &what)?;
        ensure!(
            case.upstream.page_requests(fault.project) > asked,
            "{what}: pmcache never asked the upstream"
        );
    }
    ensure_still_serving(case.pmcache())
}

#[test]
fn concurrent_requests_share_one_stalled_upstream_fetch() -> Result<()> {
    const CLIENTS: usize = 4;
    let case = Case::start(&[])?;
    case.upstream
        .set_page("demo", Behaviour::StallBeforeHeaders);
    let responses = http::concurrently(CLIENTS, || get_page(case.pmcache(), "demo"));
    let authority = case.upstream.authority();
    for (client, response) in responses.into_iter().enumerate() {
        let what = format!("client {client} of a stalled page");
        ensure_gateway_error(&response?, &TIMED_OUT, &authority, &what)?;
    }
    // Requests queued behind one refresh take its outcome: one timeout, not one each.
    ensure!(
        case.upstream.page_requests("demo") == 1,
        "{} upstream requests for one stalled page",
        case.upstream.page_requests("demo")
    );
    ensure_still_serving(case.pmcache())
}

/// RFC 9110 §10.2.3: `Retry-After` is delay-seconds or an HTTP-date; an upstream's date must be
/// passed on (as it is, or as the seconds it stands for), not replaced by pmcache's own guess.
#[test]
fn upstream_retry_after_dates_are_passed_on() -> Result<()> {
    const WAIT: Duration = Duration::from_secs(10);
    let case = Case::start(&[])?;
    let date = fault_upstream::http_date(SystemTime::now() + WAIT);
    let busy = Behaviour::Status(429, vec![("Retry-After".to_owned(), date.clone())]);
    case.upstream.set_page("busy", busy);
    let response = get_page(case.pmcache(), "busy")?;
    let expected = gateway(&[503], Wait::Unspecified, "429");
    ensure_gateway_error(&response, &expected, &case.upstream.authority(), "429")?;
    let value = response.header("retry-after");
    let seconds = value.and_then(|value| value.parse::<u64>().ok());
    ensure!(
        value == Some(date.as_str())
            || seconds.is_some_and(|s| (1..=WAIT.as_secs() + 1).contains(&s)),
        "the upstream asked for a wait until {date} ({WAIT:?}); pmcache said Retry-After {value:?}"
    );
    Ok(())
}

/// Starts pmcache in front of `upstream`, which cannot be reached, and checks that an uncached
/// page is `expected`, with a reason naming `upstream_name`.
fn ensure_unreachable(upstream: &str, upstream_name: &str, expected: &GatewayError) -> Result<()> {
    let case = serve_unreachable(upstream, &[])?;
    let pmcache = case.pmcache();
    let response = get_page(pmcache, "demo")?;
    ensure_gateway_error(&response, expected, upstream_name, upstream)?;
    ensure_still_serving(pmcache)
}

#[test]
fn refused_connections_are_a_bad_gateway() -> Result<()> {
    let addr = refusing_addr()?;
    let expected = gateway(&[502], Wait::Some, "could not be reached");
    ensure_unreachable(
        &format!("http://{addr}/simple/"),
        &addr.to_string(),
        &expected,
    )
}

/// A refused connection fails at once, so it does not count toward the circuit breaker: when
/// the upstream comes back, the next request reaches it.
#[test]
fn refused_connections_do_not_open_the_circuit() -> Result<()> {
    let addr = refusing_addr()?;
    let upstream = format!("http://{addr}/simple/");
    let case = serve_unreachable(
        &upstream,
        &[
            ("PMCACHE_UPSTREAM_BREAKER_THRESHOLD", "2"),
            ("PMCACHE_UPSTREAM_BREAKER_COOLDOWN", "1h"),
        ],
    )?;
    let pmcache = case.pmcache();
    let expected = gateway(&[502], Wait::Some, "could not be reached");
    for _ in 0..4 {
        let response = get_page(pmcache, "demo")?;
        ensure_gateway_error(&response, &expected, &addr.to_string(), &upstream)?;
    }
    ensure!(open_circuits(pmcache)? == "0");
    ensure_still_serving(pmcache)
}

#[test]
fn a_listener_that_never_accepts_is_a_gateway_timeout() -> Result<()> {
    let silent = Unanswering::bind()?;
    let url = silent.index_url()?;
    let authority = url
        .trim_start_matches("http://")
        .trim_end_matches("/simple/");
    // The kernel completes the connection into the backlog, so pmcache sends its request and
    // waits for headers: a read timeout. (Were the backlog full, the connect timeout would
    // fire instead; both are the upstream's fault and both are worth a retry.)
    let expected = gateway(&[504, 502], Wait::Some, "");
    ensure_unreachable(&url, authority, &expected)
}

#[test]
fn an_unresolvable_upstream_is_a_gateway_error() -> Result<()> {
    // A resolver answers NXDOMAIN at once (a connect failure, 502); one that cannot be reached
    // runs into the timeout (504). Either way, never a 404.
    let expected = gateway(&[502, 504], Wait::Some, "");
    ensure_unreachable(
        &format!("http://{UNRESOLVABLE_HOST}/simple/"),
        UNRESOLVABLE_HOST,
        &expected,
    )
}

#[test]
fn cached_pages_are_served_stale_when_the_upstream_is_unreachable() -> Result<()> {
    let mut case = Case::start(&[])?;
    let cached = page_ok(case.pmcache(), "demo")?;

    case.upstream.stop();
    let refused = get_page(case.pmcache(), "demo")?;
    ensure_stale(&refused, &cached, "the upstream refusing connections")?;

    // The same data dir behind upstreams that cannot be reached at all.
    let silent = Unanswering::bind()?;
    let unreachable = [
        silent.index_url()?,
        format!("http://{UNRESOLVABLE_HOST}/simple/"),
    ];
    for upstream in unreachable {
        case.pmcache_mut().stop()?;
        case.restart_with(&[("PMCACHE_PYPI_UPSTREAM", &upstream)])?;
        let response = get_page(case.pmcache(), "demo")?;
        ensure_stale(&response, &cached, &format!("upstream {upstream}"))?;
        ensure_still_serving(case.pmcache())?;
    }
    Ok(())
}

/// A fault of one project's file; `before_headers` is the answer when the upstream fails before
/// sending any byte (pmcache can then still answer with an error status).
struct FileFault {
    project: &'static str,
    behaviour: Behaviour,
    before_headers: Option<GatewayError>,
}

fn file_faults() -> Vec<FileFault> {
    let fault = |project, behaviour, before_headers| FileFault {
        project,
        behaviour,
        before_headers,
    };
    vec![
        fault("truncate", Behaviour::Truncate, None),
        fault("stallbody", Behaviour::StallMidBody, None),
        fault("longer", Behaviour::LongerThanAnnounced, None),
        fault("shorter", Behaviour::ShorterThanAnnounced, None),
        fault("wrongbytes", Behaviour::WrongBytes, None),
        fault(
            "stallheaders",
            Behaviour::StallBeforeHeaders,
            Some(TIMED_OUT),
        ),
        fault(
            "status500",
            Behaviour::Status(500, Vec::new()),
            Some(gateway(&[502], Wait::Some, "500")),
        ),
        fault(
            "status429",
            Behaviour::status_retry_after(429, 7),
            Some(gateway(&[503], Wait::Exactly("7"), "429")),
        ),
    ]
}

/// The digests of everything a faulty transfer of `project`'s file could have produced: the
/// published bytes, the wrong bytes, and the first half.
fn faulty_digests(project: &str) -> Vec<String> {
    let published = fault_upstream::file_bytes(project);
    vec![
        sha256_hex(&published),
        sha256_hex(&fault_upstream::wrong_bytes(&published)),
        sha256_hex(&published[..published.len() / 2]),
    ]
}

#[test]
fn artifact_faults_fail_the_download_and_store_nothing() -> Result<()> {
    let case = Case::start(&[])?;
    let authority = case.upstream.authority();
    for fault in file_faults() {
        let url = file_url(case.pmcache(), fault.project)?;
        let what = format!("{:?} on a file", fault.behaviour);
        case.upstream
            .set_file(fault.project, fault.behaviour.clone());
        let asked = case.upstream.file_requests(fault.project);
        match &fault.before_headers {
            Some(expected) => {
                let response = http::get(&url)?;
                ensure_gateway_error(&response, expected, &authority, &what)?;
            }
            None => http::ensure_failed_download(&url, &what)?,
        }
        ensure!(
            case.upstream.file_requests(fault.project) > asked,
            "{what}: pmcache never asked the upstream"
        );
        pmcache::wait_for_empty_tmp(&case.data_dir())?;
        let digests = faulty_digests(fault.project);
        let digests: Vec<&str> = digests.iter().map(String::as_str).collect();
        pmcache::ensure_not_stored(&case.data_dir(), &digests).context(what.clone())?;

        // The fault was not remembered: the next fetch gets, and keeps, the published bytes.
        case.upstream.set_file(fault.project, Behaviour::Normal);
        let published = fault_upstream::file_bytes(fault.project);
        let sha256 = sha256_hex(&published);
        http::ensure_all_published(
            vec![http::get_digest(&url)],
            published.len() as u64,
            &sha256,
        )
        .with_context(|| format!("after {what}"))?;
        pmcache::ensure_stored(&case.data_dir(), &[&sha256])?;
    }
    ensure_still_serving(case.pmcache())
}

/// The circuit breaker's contract: after `breaker_threshold` consecutive timeouts to an origin,
/// requests to it are not sent for `breaker_cooldown`: 503 with the remaining wait, or the stale
/// copy at once; then one probe goes through, and its success closes the breaker.
#[test]
fn circuit_breaker_opens_after_timeouts_and_closes_after_a_probe() -> Result<()> {
    const COOLDOWN: Duration = Duration::from_secs(2);
    let case = Case::start(&[
        ("PMCACHE_UPSTREAM_BREAKER_THRESHOLD", "2"),
        ("PMCACHE_UPSTREAM_BREAKER_COOLDOWN", "2s"),
    ])?;
    // Cached while the upstream is healthy, to be served stale while the breaker is open.
    let kept = page_ok(case.pmcache(), "kept")?;
    let authority = case.upstream.authority();

    case.upstream
        .set_page("demo", Behaviour::StallBeforeHeaders);
    for attempt in 1..=2 {
        let response = get_page(case.pmcache(), "demo")?;
        ensure_gateway_error(
            &response,
            &TIMED_OUT,
            &authority,
            &format!("timeout {attempt}"),
        )?;
    }
    let connections = case.upstream.connections();

    let refused = get_page(case.pmcache(), "demo")?;
    let context = || format!("the breaker open: {}", refused.describe());
    ensure!(refused.status == 503, "expected 503; {}", context());
    let reason = reason_line(&refused).with_context(context)?;
    ensure!(
        reason.contains("circuit"),
        "the reason does not say the circuit is open; {}",
        context()
    );
    let wait: u64 = refused
        .header("retry-after")
        .and_then(|value| value.parse().ok())
        .with_context(|| format!("no Retry-After in seconds; {}", context()))?;
    ensure!(
        wait <= COOLDOWN.as_secs(),
        "Retry-After {wait} is longer than the remaining cooldown; {}",
        context()
    );

    let stale = get_page(case.pmcache(), "kept")?;
    ensure_stale(&stale, &kept, "a cached page while the breaker is open")?;
    ensure!(
        open_circuits(case.pmcache())? == "1",
        "the metrics should show one open circuit"
    );
    ensure!(
        case.upstream.connections() == connections,
        "requests reached the upstream while the breaker was open"
    );

    case.upstream.set_page("demo", Behaviour::Normal);
    // Refused at once until the cooldown is over; then the next request is the probe.
    wait_until(
        COOLDOWN * 3,
        "the breaker to let a probe through after its cooldown",
        || {
            let page = get_page(case.pmcache(), "demo")?;
            ensure!(
                page.status == 200 || page.status == 503,
                "while the breaker cools down: {}",
                page.describe()
            );
            Ok(page.is_complete_ok())
        },
    )
    .context("the probe after the cooldown")?;
    ensure!(
        case.upstream.connections() > connections,
        "the probe did not reach the upstream"
    );
    // Closed again: the next request goes upstream as usual.
    let asked = case.upstream.page_requests("demo");
    page_ok(case.pmcache(), "demo")?;
    ensure!(
        case.upstream.page_requests("demo") > asked,
        "the breaker did not close after a successful probe"
    );
    ensure!(open_circuits(case.pmcache())? == "0");
    ensure_still_serving(case.pmcache())
}

/// The value of `pmcache_upstream_open_circuits` on `/metrics`.
fn open_circuits(pmcache: &Pmcache) -> Result<String> {
    let metrics = http::get(&format!("{}/metrics", pmcache.base_url()))?;
    metrics
        .text()
        .lines()
        .find_map(|line| line.strip_prefix("pmcache_upstream_open_circuits "))
        .map(str::to_owned)
        .context("no pmcache_upstream_open_circuits in /metrics")
}
