//! The support console (`GET /admin`) driven in headless Chromium through
//! chromedriver and fantoccini. Needs Debian's `chromium` and
//! `chromium-driver` (/usr/bin/chromium, /usr/bin/chromedriver).

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::error::CmdError;
use fantoccini::wd::Capabilities;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use tokio::process::{Child, Command};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
/// How long one page change may take (a fetch and a render).
const STEP_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a retried saga may take to complete.
const COMPLETE_TIMEOUT: Duration = Duration::from_secs(60);

/// A headless Chromium session, and the chromedriver serving it.
pub struct Browser {
    pub client: Client,
    driver: Child,
}

impl Browser {
    pub async fn start() -> Browser {
        assert!(
            Path::new(CHROMEDRIVER).exists() && Path::new(CHROMIUM).exists(),
            "{CHROMEDRIVER} or {CHROMIUM} is missing: browser tests need Debian's \
             packages `chromium chromium-driver` \
             (apt-get install -y --no-install-recommends chromium chromium-driver)"
        );
        let port = saga_testkit::free_port();
        let mut driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, so that killing the group also ends the
            // Chromium it started (killing chromedriver alone orphans it).
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        let url = format!("http://127.0.0.1:{port}");

        // Ready once GET /status says {"value": {"ready": true}}.
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = driver.try_wait().expect("chromedriver's status") {
                panic!("chromedriver exited before it was ready: {status}");
            }
            let ready = match http.get(format!("{url}/status")).send().await {
                Ok(response) => response
                    .json::<serde_json::Value>()
                    .await
                    .is_ok_and(|body| body["value"]["ready"] == true),
                Err(_) => false,
            };
            if ready {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver not ready on {url} after 20 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        let mut capabilities = Capabilities::new();
        capabilities.insert(
            "goog:chromeOptions".to_string(),
            json!({
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                         "--disable-gpu", "--window-size=1280,1024"],
            }),
        );
        let client = ClientBuilder::rustls()
            .expect("rustls connector")
            .capabilities(capabilities)
            .connect(&url)
            .await
            .expect("a WebDriver session in headless Chromium");
        Browser { client, driver }
    }

    /// Opens `{base_url}/admin` and logs in with `token`.
    pub async fn log_in(&self, base_url: &str, token: &str) {
        let (browser, c) = (self, &self.client);
        c.goto(&format!("{base_url}/admin"))
            .await
            .expect("GET /admin");
        browser
            .wait_for("the login form", Locator::Id("token"))
            .await
            .send_keys(token)
            .await
            .expect("type the token");
        browser
            .click_then_wait_for(
                "login",
                "the console after login",
                Locator::Css("#app-view:not([hidden])"),
            )
            .await;
    }

    /// Clicks what `locator` finds on the page now.
    pub async fn click(&self, locator: Locator<'_>) {
        self.client
            .find(locator)
            .await
            .expect("the element to click")
            .click()
            .await
            .expect("a click");
    }

    /// Clicks `#id`, then waits for what the click brings: the console
    /// answers a click asynchronously, so every click is read this way.
    pub async fn click_then_wait_for(&self, id: &str, what: &str, locator: Locator<'_>) -> Element {
        self.click(Locator::Id(id)).await;
        self.wait_for(what, locator).await
    }

    /// Types `text` into the field `#id`.
    pub async fn type_into(&self, id: &str, text: &str) {
        self.client
            .find(Locator::Id(id))
            .await
            .expect("the field to type into")
            .send_keys(text)
            .await
            .expect("typing");
    }

    /// Ends the session (Chromium quits), then chromedriver. Dropping a
    /// `Browser` without this still kills both.
    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        self.kill_group();
        let _ = self.driver.wait().await;
    }

    /// SIGKILL to chromedriver's process group: chromedriver and Chromium.
    fn kill_group(&self) {
        if let Some(pid) = self.driver.id() {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe { libc::kill(-(pid as libc::pid_t), libc::SIGKILL) };
        }
    }

    /// Waits for an element; on timeout fails with what the page shows.
    pub async fn wait_for(&self, what: &str, locator: Locator<'_>) -> Element {
        match self
            .client
            .wait()
            .at_most(STEP_TIMEOUT)
            .for_element(locator)
            .await
        {
            Ok(element) => element,
            Err(err) => self.fail(&format!("waiting for {what}: {err}")).await,
        }
    }

    /// The text of `#id`, or a note saying why there is none.
    pub async fn text_of(&self, id: &str) -> String {
        match self.client.find(Locator::Id(id)).await {
            Ok(element) => element
                .text()
                .await
                .unwrap_or_else(|err| format!("<{err}>")),
            Err(err) => format!("<no #{id}: {err}>"),
        }
    }

    /// Panics with `message`, the console's error texts and a screenshot.
    pub async fn fail(&self, message: &str) -> ! {
        let mut shown = String::new();
        for id in [
            "login-error",
            "app-error",
            "sagas-error",
            "detail-status",
            "detail-error",
            "action-error",
        ] {
            shown += &format!("\n  #{id}: {:?}", self.text_of(id).await);
        }
        let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-failure.png");
        let saved = match self.client.screenshot().await {
            Ok(png) => std::fs::write(&shot, png).map(|()| shot.display().to_string()),
            Err(err) => Ok(format!("no screenshot: {err}")),
        };
        panic!("console: {message}{shown}\n  screenshot: {saved:?}");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.kill_group(); // a no-op after close(): the child is reaped
    }
}

/// Logs in to the console at `{base_url}/admin` with `token`, sees a dead
/// letter of `saga_id`, finds the saga among the suspended ones, retries it
/// with a reason and waits until the console shows it `completed`.
pub async fn retry_in_console(base_url: &str, token: &str, saga_id: &str) {
    const REASON: &str = "provider is back: retry from the console";
    let browser = Browser::start().await;
    let c = &browser.client;
    browser.log_in(base_url, token).await;

    // The saga's dead letter is listed, with a link to the saga.
    let dead = format!(r#"#dead-letters .dead-letter-saga[data-id="{saga_id}"]"#);
    browser
        .click_then_wait_for(
            "dead-letters-refresh",
            "the saga's dead letter",
            Locator::Css(&dead),
        )
        .await;

    // The list filtered by status; wait for the rows that answer that filter
    // (the unfiltered first page may still be on screen for a moment).
    let status = c.find(Locator::Id("filter-status")).await.unwrap();
    status
        .select_by_value("suspended")
        .await
        .expect("select suspended");
    let link = format!(r#"#sagas[data-query*="status=suspended"] .saga-link[data-id="{saga_id}"]"#);
    browser
        .click_then_wait_for(
            "filter-apply",
            "the saga among the suspended ones",
            Locator::Css(&link),
        )
        .await
        .click()
        .await
        .expect("open the saga");

    let detail =
        |status: &str| format!("//*[@id='detail-status' and normalize-space()='{status}']");
    browser
        .wait_for(
            "the saga's detail, suspended",
            Locator::XPath(&detail("suspended")),
        )
        .await;
    let id_shown = browser.text_of("detail-id").await;
    assert_eq!(id_shown, saga_id, "the detail shows another saga");
    // Whose checkout it is, and the clients with their limits.
    assert_eq!(
        browser.text_of("detail-client").await,
        crate::system::CLIENT
    );
    for client in [crate::system::CLIENT, crate::system::OTHER_CLIENT] {
        browser
            .wait_for(
                "the checkout clients listed",
                Locator::XPath(&format!(
                    "//table[@id='clients']//td[normalize-space()='{client}']"
                )),
            )
            .await;
    }

    browser.type_into("action-reason", REASON).await;
    browser
        .wait_for(
            "an enabled Retry",
            Locator::Css("#action-retry:not([hidden]):not([disabled])"),
        )
        .await
        .click()
        .await
        .expect("click Retry");
    // The answer: either "Retry requested." or a problem in #action-error.
    browser
        .wait_for(
            "the answer to the retry",
            Locator::XPath(
                "//*[(@id='action-done' or @id='action-error') and normalize-space()!='']",
            ),
        )
        .await;
    let error = browser.text_of("action-error").await;
    if !error.is_empty() {
        browser
            .fail(&format!("the retry was refused: {error}"))
            .await;
    }

    // Refresh until the saga completes.
    let deadline = Instant::now() + COMPLETE_TIMEOUT;
    let completed = detail("completed");
    loop {
        let wait = c.wait().at_most(Duration::from_secs(1));
        match wait.for_element(Locator::XPath(&completed)).await {
            Ok(_) => break,
            Err(CmdError::WaitTimeout) if Instant::now() < deadline => {
                browser.click(Locator::Id("detail-refresh")).await;
            }
            Err(err) => {
                let msg = format!("waiting {COMPLETE_TIMEOUT:?} for completed: {err}");
                browser.fail(&msg).await;
            }
        }
    }

    // The timeline records the support action with its reason.
    let retry_row = format!(
        "//table[@id='timeline']//tr[td[normalize-space()='retry'] and td[normalize-space()='{REASON}']]"
    );
    browser
        .wait_for("the retry in the timeline", Locator::XPath(&retry_row))
        .await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn support_retries_a_parked_saga_from_the_console() {
    use crate::system::{order, System, ADMIN_ACTOR, ADMIN_TOKEN};
    use orchestrator::saga::StepPolicies;

    let system = System::start_with(StepPolicies::uniform(System::fast_retries(2))).await;
    let id = system.park(&order(&[("BOOK", 2)], "sim_approve")).await;
    system.outage(false).await;
    // A garbled reply about this saga, for the dead-letter list.
    let stop = tokio_util::sync::CancellationToken::new();
    let broker = system.connect_broker("console-test", &stop).await;
    let saga_id: uuid::Uuid = id.parse().unwrap();
    broker
        .publish(&saga_shared::broker::Outgoing {
            exchange: broker.topology().reply_exchange(),
            routing_key: saga_shared::topology::REPLY_ROUTING_KEY.to_owned(),
            body: b"<garbled>".to_vec(),
            message_id: uuid::Uuid::new_v4(),
            saga_id,
            message_type: "payment.charge.reply".into(),
            traceparent: saga_shared::traceparent::for_saga(saga_id),
        })
        .await
        .unwrap();
    broker.close().await;
    saga_testkit::eventually(
        "the dead letter recorded",
        Duration::from_secs(30),
        || async { (system.dead_letters(&id).await.len() == 1).then_some(()) },
    )
    .await;

    retry_in_console(&system.base_url, ADMIN_TOKEN, &id).await;

    assert_eq!(system.wait_final(&id).await["status"], "completed");
    let actor: String = sqlx::query_scalar(
        "SELECT actor FROM saga_events WHERE saga_id = $1::uuid AND event = 'retry'",
    )
    .bind(&id)
    .fetch_one(&system.orchestrator_db.pool)
    .await
    .unwrap();
    assert_eq!(actor, ADMIN_ACTOR);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_retries_exactly_the_group_it_showed() {
    use crate::system::{order, System, ADMIN_TOKEN};
    use orchestrator::saga::StepPolicies;

    let system = System::start_with(StepPolicies::uniform(System::fast_retries(1))).await;
    let book = order(&[("BOOK", 1)], "sim_approve");
    let shown = system.park_each(&book, 2).await;

    let browser = Browser::start().await;
    browser.log_in(&system.base_url, ADMIN_TOKEN).await;
    browser
        .wait_for(
            "the outage group's Retry group",
            Locator::Css(r#"#failures .retry-group[data-error="payment provider outage"]"#),
        )
        .await
        .click()
        .await
        .expect("click Retry group");
    browser
        .wait_for(
            "the dry run's count",
            Locator::XPath(
                "//*[@id='bulk-count' and normalize-space()='2 sagas would be retried']",
            ),
        )
        .await;

    // One more parks in the same group while support reads the count.
    let later = system.park_each(&book, 1).await;
    system.outage(false).await;
    browser.type_into("bulk-reason", "provider back").await;
    browser
        .click_then_wait_for(
            "bulk-confirm",
            "the bulk retry's answer",
            Locator::XPath("//*[@id='bulk-result' and normalize-space()!='']"),
        )
        .await;
    let result = browser.text_of("bulk-result").await;
    if result != "2 sagas retried" {
        browser
            .fail(&format!("the bulk retry answered {result:?}"))
            .await;
    }
    browser.close().await;

    system
        .wait_status(&shown, "completed", COMPLETE_TIMEOUT)
        .await;
    assert_eq!(
        system.saga_status(&later[0]).await,
        "suspended",
        "a saga the console never showed was retried"
    );
    system.cancel(&later[0]).await;
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_finds_a_customer_and_shows_an_outage_in_counts_and_chart() {
    use crate::system::{order, System, ADMIN_TOKEN};
    use orchestrator::saga::StepPolicies;

    const CUSTOMER: &str = "alice-1000";
    let system = System::start_with(StepPolicies::uniform(System::fast_retries(1))).await;
    let mut alices = order(&[("BOOK", 1)], "sim_approve");
    alices["customer_id"] = json!(CUSTOMER);
    let alice = system.place(&alices).await;
    assert_eq!(system.wait_final(&alice).await["status"], "completed");
    system.checkout(&order(&[("BOOK", 1)], "sim_decline")).await;
    let parked = system
        .park_each(&order(&[("MUG", 1)], "sim_approve"), 2)
        .await;

    let browser = Browser::start().await;
    let c = &browser.client;
    browser.log_in(&system.base_url, ADMIN_TOKEN).await;

    // The counts at the top and the hour's chart show the outage (the
    // page refreshes itself; nothing here clicks a refresh).
    let shows = |id: &str, text: &str| format!("//*[@id='{id}' and normalize-space()='{text}']");
    for (id, text) in [
        ("count-suspended", "2"),
        ("count-completed", "1"),
        ("count-compensated", "1"),
        ("count-running", "0"),
        ("chart-suspended", "2"),
        ("chart-completed", "1"),
        ("chart-rejected", "1"),
    ] {
        browser
            .wait_for(
                &format!("#{id} to show {text}"),
                Locator::XPath(&shows(id, text)),
            )
            .await;
    }
    let bars = c
        .find_all(Locator::Css("#chart rect.bar.suspended"))
        .await
        .unwrap();
    let mut drawn = 0;
    for bar in bars {
        drawn += bar
            .attr("data-count")
            .await
            .unwrap()
            .and_then(|n| n.parse::<i64>().ok())
            .unwrap_or(0);
    }
    assert_eq!(
        drawn, 2,
        "the chart's suspended bars add up to the parked sagas"
    );

    // Search by customer: exactly Alice's checkout, with its customer,
    // total and age.
    browser.type_into("filter-q", CUSTOMER).await;
    let found = format!(r#"#sagas[data-query*="q={CUSTOMER}"] .saga-link[data-id="{alice}"]"#);
    browser
        .click_then_wait_for(
            "filter-apply",
            "Alice's checkout found by her customer id",
            Locator::Css(&found),
        )
        .await;
    let rows = c.find_all(Locator::Css("#sagas tbody tr")).await.unwrap();
    assert_eq!(rows.len(), 1, "the search finds Alice's checkout alone");
    let row = rows[0].text().await.unwrap();
    assert!(
        row.contains(CUSTOMER) && row.contains("15.45 USD") && row.contains("completed"),
        "the row shows her customer id, total and status: {row}"
    );
    let age = c
        .find(Locator::Css("#sagas tbody .age"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        age.ends_with(" s") || age.ends_with(" min"),
        "the checkout's age: {age:?}"
    );

    // The suspended count lists the parked sagas.
    browser
        .click(Locator::Css(r#"#counts button[data-status="suspended"]"#))
        .await;
    for id in &parked {
        let link = format!(r#"#sagas[data-query="status=suspended"] .saga-link[data-id="{id}"]"#);
        browser
            .wait_for("a parked saga listed from its count", Locator::Css(&link))
            .await;
    }

    // The pause switch stops the refreshing and says so.
    browser
        .click_then_wait_for(
            "auto-refresh",
            "the console to say it is paused",
            Locator::XPath("//*[@id='refreshed-at' and starts-with(normalize-space(), 'paused')]"),
        )
        .await;
    browser.close().await;

    system.outage(false).await;
    for id in &parked {
        system.cancel(id).await;
    }
    system.stop().await;
}
