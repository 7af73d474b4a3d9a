//! A small W3C WebDriver client (<https://www.w3.org/TR/webdriver2/>) for the explorer's browser
//! tests: Debian's ChromeDriver as a child process, driving headless Chromium with the flags a
//! closed network needs (no background networking, no component updates, no sync), over plain
//! HTTP/JSON with the client the probes use.

use std::{
    os::unix::process::CommandExt,
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use serde_json::{Value, json};

use crate::{programs, servers::free_port};

/// The key W3C WebDriver names an element reference with.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How long one WebDriver command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a page loaded by a key press or a click may take.
const NAVIGATION_TIMEOUT: Duration = Duration::from_secs(30);

/// A ChromeDriver process and one browser session; both end on drop (the process group of
/// ChromeDriver and its Chromium is killed).
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

/// An element of the current page.
#[derive(Debug, Clone)]
pub struct Element(String);

impl Browser {
    /// Starts ChromeDriver on a free port and a headless Chromium session with a fresh profile
    /// in `profile`.
    pub async fn start(profile: &std::path::Path) -> anyhow::Result<Self> {
        let port = free_port()?;
        // Its own process group, which the Chromium it starts joins: dropping the browser ends
        // both, even when the session was never ended (a test that failed half-way).
        let driver = Command::new(programs::chromedriver())
            .process_group(0)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting chromedriver (deploy/test-deps.sh installs it)")?;
        let client = Client::builder(TokioExecutor::new()).build_http();
        let mut browser = Self { driver, base: format!("http://127.0.0.1:{port}"), session: String::new(), client };
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1500,1000",
            &format!("--user-data-dir={}", profile.display()),
        ];
        let capabilities = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome",
            "goog:chromeOptions": {"binary": programs::chromium(), "args": args}}}});
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let session = loop {
            match browser.call("POST", "/session", Some(capabilities.clone())).await {
                Ok(value) => break value,
                Err(err)
                    if tokio::time::Instant::now() < deadline && format!("{err:#}").contains("Connection refused") =>
                {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(err) => return Err(err),
            }
        };
        browser.session = session["sessionId"].as_str().context("no sessionId")?.to_owned();
        Ok(browser)
    }

    /// One WebDriver command; its `value`, or the error it answered.
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let request = axum::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.map(|b| b.to_string()).unwrap_or_default())))?;
        let response = tokio::time::timeout(COMMAND_TIMEOUT, self.client.request(request))
            .await
            .with_context(|| format!("{method} {path} timed out"))??;
        let status = response.status();
        let body: Value = serde_json::from_slice(&response.into_body().collect().await?.to_bytes())?;
        anyhow::ensure!(status.is_success(), "{method} {path}: {status} {body}");
        Ok(body["value"].clone())
    }

    fn at(&self, path: &str) -> String {
        format!("/session/{}{path}", self.session)
    }

    /// Opens `url` and waits for it to load.
    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.call("POST", &self.at("/url"), Some(json!({"url": url}))).await.map(drop)
    }

    /// The current URL.
    pub async fn url(&self) -> anyhow::Result<String> {
        Ok(self.call("GET", &self.at("/url"), None).await?.as_str().unwrap_or_default().to_owned())
    }

    /// The elements matching a CSS selector.
    pub async fn all(&self, css: &str) -> anyhow::Result<Vec<Element>> {
        let found =
            self.call("POST", &self.at("/elements"), Some(json!({"using": "css selector", "value": css}))).await?;
        Ok(found
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e[ELEMENT].as_str())
            .map(|id| Element(id.to_owned()))
            .collect())
    }

    /// The first element matching a CSS selector, if any.
    pub async fn find(&self, css: &str) -> anyhow::Result<Option<Element>> {
        Ok(self.all(css).await?.into_iter().next())
    }

    /// An element's rendered text.
    pub async fn text(&self, element: &Element) -> anyhow::Result<String> {
        let text = self.call("GET", &self.at(&format!("/element/{}/text", element.0)), None).await?;
        Ok(text.as_str().unwrap_or_default().to_owned())
    }

    /// An element's attribute (or property) `name`.
    pub async fn attribute(&self, element: &Element, name: &str) -> anyhow::Result<Option<String>> {
        let value = self.call("GET", &self.at(&format!("/element/{}/attribute/{name}", element.0)), None).await?;
        Ok(value.as_str().map(str::to_owned))
    }

    /// Types `text` into an element (`\u{E007}` is Enter).
    pub async fn type_into(&self, element: &Element, text: &str) -> anyhow::Result<()> {
        self.call("POST", &self.at(&format!("/element/{}/value", element.0)), Some(json!({"text": text})))
            .await
            .map(drop)
    }

    /// Clicks an element.
    pub async fn click(&self, element: &Element) -> anyhow::Result<()> {
        self.call("POST", &self.at(&format!("/element/{}/click", element.0)), Some(json!({}))).await.map(drop)
    }

    /// Presses and releases each key of `keys` on whatever has the focus, as a person would.
    pub async fn press(&self, keys: &str) -> anyhow::Result<()> {
        let actions: Vec<Value> = keys
            .chars()
            .flat_map(|key| {
                [
                    json!({"type": "keyDown", "value": key.to_string()}),
                    json!({"type": "keyUp", "value": key.to_string()}),
                ]
            })
            .collect();
        let body = json!({"actions": [{"type": "key", "id": "keyboard", "actions": actions}]});
        self.call("POST", &self.at("/actions"), Some(body)).await.map(drop)
    }

    /// Sends these headers with every request the browser makes from now on, as an
    /// authenticating proxy in front of a service adds them (ChromeDriver's
    /// `goog/cdp/execute`, Chrome DevTools Protocol `Network.setExtraHTTPHeaders`).
    pub async fn set_headers(&self, headers: &[(&str, &str)]) -> anyhow::Result<()> {
        let headers: serde_json::Map<String, Value> =
            headers.iter().map(|(name, value)| ((*name).to_owned(), Value::from(*value))).collect();
        for (cmd, params) in
            [("Network.enable", json!({})), ("Network.setExtraHTTPHeaders", json!({"headers": headers}))]
        {
            self.call("POST", &self.at("/goog/cdp/execute"), Some(json!({"cmd": cmd, "params": params}))).await?;
        }
        Ok(())
    }

    /// Runs `script` in the page and returns its result.
    pub async fn run(&self, script: &str) -> anyhow::Result<Value> {
        self.call("POST", &self.at("/execute/sync"), Some(json!({"script": script, "args": []}))).await
    }

    /// Runs `action` (a key press, a click) that loads a new page, and waits until that page has
    /// loaded: WebDriver waits for a navigation only after `goto`, not after keys or a script's
    /// click. The old page is marked first, so a new one is told by the mark being gone.
    pub async fn navigating(&self, action: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
        self.run("window.kubecensusOldPage = true").await?;
        action.await?;
        let deadline = tokio::time::Instant::now() + NAVIGATION_TIMEOUT;
        loop {
            // While the new page is loading, a script may fail to run: that is not loaded yet.
            let loaded = self.run("return !window.kubecensusOldPage && document.readyState === 'complete'").await;
            if loaded.is_ok_and(|loaded| loaded == Value::Bool(true)) {
                return Ok(());
            }
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "no new page within {NAVIGATION_TIMEOUT:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A PNG screenshot of the window.
    pub async fn screenshot(&self) -> anyhow::Result<Vec<u8>> {
        use base64::Engine;
        let png = self.call("GET", &self.at("/screenshot"), None).await?;
        Ok(base64::engine::general_purpose::STANDARD.decode(png.as_str().unwrap_or_default())?)
    }
}

impl Browser {
    /// Ends the session (the browser exits), then ChromeDriver.
    pub async fn quit(self) -> anyhow::Result<()> {
        self.call("DELETE", &self.at(""), None).await.map(drop)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).stderr(Stdio::null()).status();
        let _ = self.driver.wait();
    }
}
