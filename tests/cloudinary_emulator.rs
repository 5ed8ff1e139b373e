//! The Cloudinary Admin API emulator on its own, over real HTTP: what each endpoint answers, as
//! the public reference describes it, before any client of ours is tested against it.

#[path = "common/cloudinary.rs"]
mod cloudinary;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use base64::Engine as _;
use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use reqwest::Method;
use reqwest::header::{CONTENT_TYPE, HeaderMap};
use serde_json::{Value, json};

use cloudinary::{Emulator, Options, Resource, api_sign_request};

/// A request body, in each of the three encodings the API takes.
enum Body {
    Empty,
    Form(Vec<(String, String)>),
    Json(Value),
}

/// What one call got back.
struct Answer {
    status: u16,
    headers: HeaderMap,
    json: Value,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
    }

    fn message(&self) -> &str {
        self.json["error"]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("no error message in {}", self.json))
    }

    fn ids(&self) -> Vec<String> {
        self.json["resources"]
            .as_array()
            .unwrap_or_else(|| panic!("no resources in {}", self.json))
            .iter()
            .map(|r| r["public_id"].as_str().expect("a public_id").to_owned())
            .collect()
    }

    fn cursor(&self) -> Option<String> {
        self.json
            .get("next_cursor")
            .and_then(Value::as_str)
            .map(str::to_owned)
    }
}

/// A plain HTTP client with the emulator's credentials; nothing of our own Cloudinary client.
struct Api {
    http: reqwest::Client,
    base: String,
    cloud: String,
    key: String,
    secret: String,
}

impl Api {
    fn new(emulator: &Emulator, opts: &Options) -> Api {
        Api {
            http: reqwest::Client::new(),
            base: emulator.base_url(),
            cloud: opts.cloud.clone(),
            key: opts.api_key.clone(),
            secret: opts.api_secret.clone(),
        }
    }

    fn with_credentials(&self, cloud: &str, key: &str, secret: &str) -> Api {
        Api {
            http: self.http.clone(),
            base: self.base.clone(),
            cloud: cloud.to_owned(),
            key: key.to_owned(),
            secret: secret.to_owned(),
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Body,
        auth: bool,
    ) -> Answer {
        let mut url = format!("{}/v1_1/{}{path}", self.base, self.cloud);
        if !query.is_empty() {
            url.push('?');
            url.push_str(&form(query.iter().map(|(k, v)| (*k, *v))));
        }
        let mut req = self.http.request(method.clone(), &url);
        if auth {
            req = req.basic_auth(&self.key, Some(&self.secret));
        }
        req = match body {
            Body::Empty => req,
            Body::Form(pairs) => req
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(form(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))),
            Body::Json(v) => req
                .header(CONTENT_TYPE, "application/json")
                .body(v.to_string()),
        };
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.expect("a response body");
        let json = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{method} {url} answered {status} with no JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        });
        Answer {
            status,
            headers,
            json,
        }
    }

    async fn get(&self, path: &str, query: &[(&str, &str)]) -> Answer {
        self.send(Method::GET, path, query, Body::Empty, true).await
    }

    /// `GET` with the ids as `public_ids[]`, as the SDKs send them.
    async fn by_ids(&self, path: &str, ids: &[String]) -> Answer {
        let query: Vec<(&str, &str)> = ids.iter().map(|id| ("public_ids[]", id.as_str())).collect();
        self.get(path, &query).await
    }

    async fn search(&self, body: Value) -> Answer {
        self.send(
            Method::POST,
            "/resources/search",
            &[],
            Body::Json(body),
            true,
        )
        .await
    }

    async fn delete(&self, path: &str, body: Body) -> Answer {
        self.send(Method::DELETE, path, &[], body, true).await
    }

    /// An Upload API call: its parameters, signed or not, as a form body and no Basic auth.
    async fn upload(&self, path: &str, params: Vec<(String, String)>) -> Answer {
        self.send(Method::POST, path, &[], Body::Form(params), false)
            .await
    }
}

fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// `params` with `timestamp`, `api_key` and a signature made with `secret`.
fn signed_with(params: &[(&str, &str)], key: &str, secret: &str) -> Vec<(String, String)> {
    let mut pairs = params.to_vec();
    let now = Utc::now().timestamp().to_string();
    if !params.iter().any(|(k, _)| *k == "timestamp") {
        pairs.push(("timestamp", now.as_str()));
    }
    pairs.push(("api_key", key));
    let signature = api_sign_request(&pairs, secret);
    let mut out = owned(&pairs);
    out.push(("signature".to_owned(), signature));
    out
}

fn without(mut params: Vec<(String, String)>, name: &str) -> Vec<(String, String)> {
    params.retain(|(k, _)| k != name);
    params
}

fn replaced(params: Vec<(String, String)>, name: &str, value: &str) -> Vec<(String, String)> {
    params
        .into_iter()
        .map(|(k, v)| {
            let v = if k == name { value.to_owned() } else { v };
            (k, v)
        })
        .collect()
}

fn form<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

fn at(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_714_557_600 + secs, 0).unwrap()
}

fn start(opts: &Options) -> (Emulator, Api) {
    let emulator = Emulator::start(opts.clone());
    let api = Api::new(&emulator, opts);
    (emulator, api)
}

/// `img-0000` … : one second apart, the highest number the newest.
fn numbered_images(n: usize) -> Vec<Resource> {
    (0..n)
        .map(|i| Resource::image(&format!("photos/img-{i:04}"), at(i64::try_from(i).unwrap())))
        .collect()
}

/// Every page of `GET path` from `cursor` on, following `next_cursor`; the pages' ids and the
/// cursors handed out.
async fn all_pages(
    api: &Api,
    path: &str,
    query: &[(&str, &str)],
    mut cursor: Option<String>,
) -> (Vec<Vec<String>>, Vec<String>) {
    let mut pages = Vec::new();
    let mut cursors = Vec::new();
    loop {
        let mut q = query.to_vec();
        if let Some(c) = &cursor {
            q.push(("next_cursor", c));
        }
        let answer = api.get(path, &q).await;
        assert_eq!(answer.status, 200, "{}", answer.json);
        pages.push(answer.ids());
        cursor = answer.cursor();
        match &cursor {
            Some(c) => cursors.push(c.clone()),
            None => return (pages, cursors),
        }
        assert!(pages.len() < 1_000, "paging does not end");
    }
}

#[tokio::test]
async fn calls_without_or_with_wrong_credentials_are_refused() {
    let opts = Options::default();
    let (emulator, api) = start(&opts);
    emulator.add(Resource::image("a", at(0)));

    let anonymous = api
        .send(Method::GET, "/resources/image", &[], Body::Empty, false)
        .await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.message(), "Must supply api_key");
    assert!(
        anonymous
            .headers
            .get("x-featureratelimit-remaining")
            .is_none()
    );

    let wrong_secret = api
        .with_credentials(&opts.cloud, &opts.api_key, "not-the-secret")
        .get("/resources/image", &[])
        .await;
    assert_eq!(wrong_secret.status, 401);
    assert_eq!(wrong_secret.message(), "api_secret mismatch");

    let wrong_key = api
        .with_credentials(&opts.cloud, "999", &opts.api_secret)
        .get("/resources/image", &[])
        .await;
    assert_eq!(wrong_key.status, 401);
    assert_eq!(wrong_key.message(), "Unknown API key 999");

    let wrong_cloud = api
        .with_credentials("other-cloud", &opts.api_key, &opts.api_secret)
        .get("/resources/image", &[])
        .await;
    assert_eq!(wrong_cloud.status, 401);
    assert_eq!(wrong_cloud.message(), "Invalid cloud_name other-cloud");

    let ok = api.get("/resources/image", &[]).await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.ids(), ["a"]);
    // Refused calls are answered calls too, but they spend none of the allowance.
    assert_eq!(emulator.calls(), 5);
    assert_eq!(ok.header("x-featureratelimit-remaining"), "499");
}

#[tokio::test]
async fn paging_1234_assets_by_500_gives_three_pages_with_each_asset_once() {
    let opts = Options::default();
    let (emulator, api) = start(&opts);
    emulator.add_many(numbered_images(1_234));
    emulator.add(Resource::video("photos/a-video", at(5)));

    let (pages, cursors) = all_pages(
        &api,
        "/resources/image/upload",
        &[("max_results", "500")],
        None,
    )
    .await;
    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert_eq!(sizes, [500, 500, 234]);
    let all: Vec<String> = pages.concat();
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!(unique.len(), 1_234, "every image exactly once");
    // Newest first, the reference's default direction.
    assert_eq!(all[0], "photos/img-1233");
    assert_eq!(all[1_233], "photos/img-0000");
    assert_eq!(cursors.len(), 2);
    for c in &cursors {
        assert!(!c.contains("img"), "a cursor is opaque: {c}");
    }
    assert_eq!(emulator.calls_to("GET /resources/image/upload"), 3);
}

#[tokio::test]
async fn assets_removed_or_added_between_pages_neither_repeat_nor_hide_the_others() {
    let opts = Options::default();
    let (emulator, api) = start(&opts);
    emulator.add_many(numbered_images(30));

    let first = api
        .get("/resources/image/upload", &[("max_results", "10")])
        .await;
    let cursor = first.cursor().expect("more pages");
    // Gone: one already listed, one still to come. New: one newer than the cursor, one older.
    assert!(emulator.remove("image", "photos/img-0025"));
    assert!(emulator.remove("image", "photos/img-0012"));
    emulator.add(Resource::image("photos/new-newest", at(100)));
    emulator.add(Resource::image("photos/new-oldest", at(-100)));

    let mut seen = first.ids();
    let (rest, _) = all_pages(
        &api,
        "/resources/image/upload",
        &[("max_results", "10")],
        Some(cursor),
    )
    .await;
    seen.extend(rest.concat());
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no asset twice: {seen:?}");
    for i in (0..30).filter(|i| *i != 12 && *i != 25) {
        assert!(
            seen.contains(&format!("photos/img-{i:04}")),
            "img-{i:04} stayed and must be listed"
        );
    }
    assert!(!seen.contains(&"photos/img-0012".to_owned()));
    assert!(seen.contains(&"photos/new-oldest".to_owned()));
    assert!(
        !seen.contains(&"photos/new-newest".to_owned()),
        "behind the cursor"
    );
}

#[tokio::test]
async fn direction_prefix_and_start_at_choose_order_and_range() {
    let opts = Options::default();
    let (emulator, api) = start(&opts);
    emulator.add_many([
        Resource::image("b/one", at(30)),
        Resource::image("a/two", at(10)),
        Resource::image("a/three", at(20)),
        Resource::image("c/four", at(40)),
    ]);

    let desc = api.get("/resources/image/upload", &[]).await;
    assert_eq!(desc.ids(), ["c/four", "b/one", "a/three", "a/two"]);
    for direction in ["asc", "1"] {
        let asc = api
            .get("/resources/image/upload", &[("direction", direction)])
            .await;
        assert_eq!(asc.ids(), ["a/two", "a/three", "b/one", "c/four"]);
    }
    let minus_one = api
        .get("/resources/image/upload", &[("direction", "-1")])
        .await;
    assert_eq!(minus_one.ids(), desc.ids());

    // With a prefix the reference ignores direction and orders by public ID.
    let prefixed = api
        .get(
            "/resources/image/upload",
            &[("prefix", "a/"), ("direction", "desc")],
        )
        .await;
    assert_eq!(prefixed.ids(), ["a/three", "a/two"]);

    let since = api
        .get(
            "/resources/image/upload",
            &[("start_at", "2024-05-01T10:00:20Z"), ("direction", "asc")],
        )
        .await;
    assert_eq!(since.ids(), ["a/three", "b/one", "c/four"]);

    let listed = &desc.json["resources"][0];
    assert_eq!(listed["created_at"], "2024-05-01T10:00:40Z");
    assert_eq!(listed["type"], "upload");
    assert_eq!(listed["resource_type"], "image");
    assert_eq!(listed["format"], "jpg");
    assert_eq!(listed["bytes"], 4_096);
    assert_eq!(listed["width"], 800);
    assert_eq!(listed["folder"], "c");
    assert_eq!(listed["version"], 1_714_557_640_i64);
    assert_eq!(
        listed["secure_url"],
        "https://res.cloudinary.com/demo-cloud/image/upload/v1714557640/c/four.jpg"
    );
    assert_eq!(listed["asset_id"].as_str().map(str::len), Some(32));
}

#[tokio::test]
async fn listing_without_a_type_covers_every_delivery_type_and_raw_keeps_its_extension() {
    let opts = Options::default();
    let (emulator, api) = start(&opts);
    let mut private = Resource::raw("docs/secret.pdf", at(2));
    private.delivery_type = "private".to_owned();
    emulator.add_many([Resource::raw("docs/readme.txt", at(1)), private]);

    let all = api.get("/resources/raw", &[]).await;
    assert_eq!(all.ids(), ["docs/secret.pdf", "docs/readme.txt"]);
    let uploaded = api.get("/resources/raw/upload", &[]).await;
    assert_eq!(uploaded.ids(), ["docs/readme.txt"]);
    let raw = &uploaded.json["resources"][0];
    assert_eq!(raw["format"], "");
    assert_eq!(raw["width"], Value::Null);
    assert_eq!(
        raw["url"],
        "http://res.cloudinary.com/demo-cloud/raw/upload/v1714557601/docs/readme.txt"
    );
}

#[tokio::test]
async fn max_results_outside_1_to_500_is_a_bad_request() {
    let opts = Options::default();
    let (emulator, api) = start(&opts);
    emulator.add_many(numbered_images(12));
    assert_eq!(
        api.get("/resources/image", &[]).await.ids().len(),
        10,
        "default 10"
    );
    for bad in ["0", "501", "ten"] {
        let answer = api.get("/resources/image", &[("max_results", bad)]).await;
        assert_eq!(answer.status, 400, "max_results={bad}");
        assert!(
            answer.message().contains("max_results"),
            "{}",
            answer.message()
        );
    }
    let bad_cursor = api
        .get("/resources/image", &[("next_cursor", "not-a-cursor")])
        .await;
    assert_eq!(bad_cursor.status, 400);
}

#[tokio::test]
async fn by_ids_takes_100_ids_and_refuses_101() {
    let opts = Options::default();
    let (emulator, api) = start(&opts);
    emulator.add_many(numbered_images(60));

    let ids: Vec<String> = (0..100).map(|i| format!("photos/img-{i:04}")).collect();
    let found = api.by_ids("/resources/image/upload", &ids).await;
    assert_eq!(found.status, 200);
    assert_eq!(
        found.ids(),
        ids[..60],
        "absent ids are left out, the rest in order"
    );
    assert_eq!(found.cursor(), None);

    let mut too_many = ids.clone();
    too_many.push("photos/one-more".to_owned());
    let refused = api.by_ids("/resources/image/upload", &too_many).await;
    assert_eq!(refused.status, 400);
    assert!(
        refused.message().contains("public_ids"),
        "{}",
        refused.message()
    );
}

#[tokio::test]
async fn parameters_in_query_form_or_json_give_the_same_answer() {
    let opts = Options::default();
    let (emulator, api) = start(&opts);
    emulator.add_many(numbered_images(20));
    emulator.add(Resource::video("photos/clip", at(3)));

    let ids = ["photos/img-0003", "photos/img-0007", "photos/nope"];
    let query: Vec<(&str, &str)> = ids.iter().map(|id| ("public_ids[]", *id)).collect();
    let by_query = api.get("/resources/image/upload", &query).await;
    let by_form = api
        .send(
            Method::GET,
            "/resources/image/upload",
            &[],
            Body::Form(
                ids.iter()
                    .map(|id| ("public_ids[]".to_owned(), (*id).to_owned()))
                    .collect(),
            ),
            true,
        )
        .await;
    let by_json = api
        .send(
            Method::GET,
            "/resources/image/upload",
            &[],
            Body::Json(json!({ "public_ids": ids })),
            true,
        )
        .await;
    assert_eq!(by_query.ids(), ["photos/img-0003", "photos/img-0007"]);
    assert_eq!(by_form.json, by_query.json);
    assert_eq!(by_json.json, by_query.json);

    let listed_query = api
        .get(
            "/resources/image/upload",
            &[("prefix", "photos/img-001"), ("max_results", "3")],
        )
        .await;
    let listed_json = api
        .send(
            Method::GET,
            "/resources/image/upload",
            &[],
            Body::Json(json!({ "prefix": "photos/img-001", "max_results": 3 })),
            true,
        )
        .await;
    assert_eq!(
        listed_query.ids(),
        ["photos/img-0010", "photos/img-0011", "photos/img-0012"]
    );
    assert_eq!(listed_json.json, listed_query.json);

    let expression = "resource_type:image AND public_id:photos/img-000*";
    let search_query = api
        .get(
            "/resources/search",
            &[
                ("expression", expression),
                ("sort_by[][public_id]", "asc"),
                ("max_results", "4"),
            ],
        )
        .await;
    let search_form = api
        .send(
            Method::POST,
            "/resources/search",
            &[],
            Body::Form(vec![
                ("expression".to_owned(), expression.to_owned()),
                ("sort_by".to_owned(), r#"[{"public_id":"asc"}]"#.to_owned()),
                ("max_results".to_owned(), "4".to_owned()),
            ]),
            true,
        )
        .await;
    let search_json = api
        .search(json!({
            "expression": expression,
            "sort_by": [{ "public_id": "asc" }],
            "max_results": 4,
        }))
        .await;
    let expected = [
        "photos/img-0000",
        "photos/img-0001",
        "photos/img-0002",
        "photos/img-0003",
    ];
    for answer in [&search_query, &search_form, &search_json] {
        assert_eq!(answer.status, 200, "{}", answer.json);
        assert_eq!(answer.ids(), expected);
        assert_eq!(answer.json["total_count"], 10);
    }
    assert_eq!(search_form.cursor(), search_json.cursor());
}

/// Search fixtures: dates relative to now and absolute, three formats, two types, sizes.
fn search_fixtures(now: DateTime<Utc>) -> Vec<Resource> {
    let mut big = Resource::image("shots/big", now - TimeDelta::hours(2));
    big.bytes = 50_000;
    let mut png = Resource::image("shots/a-png", now - TimeDelta::days(3));
    png.format = "png".to_owned();
    let mut private = Resource::image("shots/a-private", now - TimeDelta::days(10));
    private.delivery_type = "private".to_owned();
    vec![
        big,
        png,
        private,
        Resource::image("shots/a-old", now - TimeDelta::days(60)),
        Resource::video("clips/v1", now - TimeDelta::days(1) - TimeDelta::hours(1)),
        Resource::image(
            "archive/2023-12",
            Utc.with_ymd_and_hms(2023, 12, 31, 23, 0, 0).unwrap(),
        ),
        Resource::image(
            "archive/2024-01",
            Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap(),
        ),
        Resource::image(
            "archive/2024-02",
            Utc.with_ymd_and_hms(2024, 2, 15, 12, 0, 0).unwrap(),
        ),
        Resource::raw("docs/manual.pdf", now - TimeDelta::minutes(5)),
    ]
}

#[tokio::test]
async fn search_expressions_filter_by_type_date_size_and_boolean_logic() {
    let opts = Options::default();
    let (emulator, api) = start(&opts);
    emulator.add_many(search_fixtures(Utc::now()));

    let cases: &[(&str, &[&str])] = &[
        ("resource_type:video", &["clips/v1"]),
        ("type:private", &["shots/a-private"]),
        ("format:png", &["shots/a-png"]),
        ("bytes>40000", &["shots/big"]),
        ("uploaded_at>1d", &["docs/manual.pdf", "shots/big"]),
        (
            "uploaded_at>2d",
            &["clips/v1", "docs/manual.pdf", "shots/big"],
        ),
        (
            "created_at>4w AND resource_type:image",
            &["shots/a-png", "shots/a-private", "shots/big"],
        ),
        ("created_at<4w AND public_id:shots/*", &["shots/a-old"]),
        (
            "uploaded_at>=2024-01-01 AND public_id:archive/*",
            &["archive/2024-01", "archive/2024-02"],
        ),
        ("created_at<2024-01-01", &["archive/2023-12"]),
        ("created_at:2024-01-01", &["archive/2024-01"]),
        (
            r#"created_at>"2024-01-01T00:00:00Z" AND created_at<"2024-03-01T00:00:00Z""#,
            &["archive/2024-02"],
        ),
        (
            "created_at:[2023-12-31 TO 2024-01-01]",
            &["archive/2023-12", "archive/2024-01"],
        ),
        (
            "public_id:shots/a*",
            &["shots/a-old", "shots/a-png", "shots/a-private"],
        ),
        (
            "folder:shots NOT type:private NOT format:png",
            &["shots/a-old", "shots/big"],
        ),
        (
            "(format:png OR resource_type:video) AND -public_id:clips/*",
            &["shots/a-png"],
        ),
        (
            "resource_type:raw OR (bytes>=50000 AND format:jpg)",
            &["docs/manual.pdf", "shots/big"],
        ),
        ("NOT resource_type:image", &["clips/v1", "docs/manual.pdf"]),
        ("tags:anything", &[]),
    ];
    for (expression, expected) in cases {
        let answer = api
            .search(json!({ "expression": expression, "sort_by": [{ "public_id": "asc" }] }))
            .await;
        assert_eq!(answer.status, 200, "{expression}: {}", answer.json);
        assert_eq!(answer.ids(), *expected, "{expression}");
        assert_eq!(answer.json["total_count"], expected.len(), "{expression}");
    }

    let broken = api.search(json!({ "expression": "(format:png" })).await;
    assert_eq!(broken.status, 400);
    let count_only = api
        .search(json!({ "expression": "resource_type:image", "max_results": 0 }))
        .await;
    assert_eq!(count_only.json["total_count"], 7);
    assert_eq!(count_only.ids(), Vec::<String>::new());
    let found = api
        .search(json!({ "expression": "public_id=shots/big" }))
        .await;
    assert_eq!(
        found.json["resources"][0]["uploaded_at"],
        found.json["resources"][0]["created_at"]
    );
    assert!(found.json["time"].is_u64());
}

#[tokio::test]
async fn search_pages_follow_the_cursor_in_the_requested_order() {
    let opts = Options::default();
    let (emulator, api) = start(&opts);
    emulator.add_many(numbered_images(7));
    emulator.add(Resource::video("photos/clip", at(100)));

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut body = json!({ "expression": "resource_type:image", "max_results": 3 });
        if let Some(c) = &cursor {
            body["next_cursor"] = json!(c);
        }
        let answer = api.search(body).await;
        assert_eq!(answer.json["total_count"], 7);
        seen.extend(answer.ids());
        pages += 1;
        cursor = answer.cursor();
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(pages, 3);
    let expected: Vec<String> = (0..7).rev().map(|i| format!("photos/img-{i:04}")).collect();
    assert_eq!(seen, expected, "default order: created_at desc");

    let first = api
        .search(json!({ "expression": "resource_type:image", "max_results": 3 }))
        .await;
    let other_order = api
        .search(json!({
            "expression": "resource_type:image",
            "sort_by": [{ "public_id": "asc" }],
            "next_cursor": first.cursor(),
        }))
        .await;
    assert_eq!(other_order.status, 400, "a cursor belongs to its order");
}

#[tokio::test]
async fn deleting_100_ids_reports_each_as_deleted_or_not_found() {
    let opts = Options::default();
    let (emulator, api) = start(&opts);
    emulator.add_many(numbered_images(60));
    emulator.add(Resource::video("photos/img-0070", at(1)));

    let ids: Vec<String> = (0..100).map(|i| format!("photos/img-{i:04}")).collect();
    let pairs = ids
        .iter()
        .map(|id| ("public_ids[]".to_owned(), id.clone()))
        .collect();
    let answer = api
        .delete("/resources/image/upload", Body::Form(pairs))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.json);
    let deleted = answer.json["deleted"].as_object().expect("a deleted map");
    assert_eq!(deleted.len(), 100);
    for (i, id) in ids.iter().enumerate() {
        let expected = if i < 60 { "deleted" } else { "not_found" };
        assert_eq!(deleted[id], expected, "{id}");
        let original = u8::from(i < 60);
        assert_eq!(
            answer.json["deleted_counts"][id],
            json!({ "original": original, "derived": 0 })
        );
    }
    assert_eq!(answer.json["partial"], false);
    assert_eq!(answer.cursor(), None);
    assert!(!emulator.exists("image", "photos/img-0000"));
    assert!(
        emulator.exists("video", "photos/img-0070"),
        "only the image type"
    );
    assert_eq!(emulator.resources().len(), 1);

    let mut too_many = ids;
    too_many.push("photos/extra".to_owned());
    let refused = api
        .delete(
            "/resources/image/upload",
            Body::Json(json!({ "public_ids": too_many })),
        )
        .await;
    assert_eq!(refused.status, 400);

    let nothing = api.delete("/resources/image/upload", Body::Empty).await;
    assert_eq!(nothing.status, 400);
    assert_eq!(nothing.message(), "Missing required parameter - public_ids");
}

#[tokio::test]
async fn deleting_past_1000_by_prefix_or_all_is_partial_with_a_cursor() {
    let opts = Options::default();
    let (emulator, api) = start(&opts);
    emulator.add_many(numbered_images(1_234));
    emulator.add(Resource::image("keep/me", at(0)));

    let first = api
        .delete(
            "/resources/image/upload",
            Body::Json(json!({ "prefix": "photos/" })),
        )
        .await;
    assert_eq!(first.status, 200, "{}", first.json);
    assert_eq!(first.json["deleted"].as_object().unwrap().len(), 1_000);
    assert_eq!(first.json["partial"], true);
    let cursor = first.cursor().expect("a next_cursor with partial");
    assert_eq!(emulator.resources().len(), 235);

    let second = api
        .delete(
            "/resources/image/upload",
            Body::Form(vec![
                ("prefix".to_owned(), "photos/".to_owned()),
                ("next_cursor".to_owned(), cursor),
            ]),
        )
        .await;
    assert_eq!(second.json["deleted"].as_object().unwrap().len(), 234);
    assert_eq!(second.json["partial"], false);
    assert_eq!(second.cursor(), None);
    assert_eq!(
        emulator
            .resources()
            .iter()
            .map(|r| r.public_id.as_str())
            .collect::<Vec<_>>(),
        ["keep/me"]
    );

    emulator.add_many(numbered_images(1_001));
    let all = api
        .send(
            Method::DELETE,
            "/resources/image/upload",
            &[("all", "true")],
            Body::Empty,
            true,
        )
        .await;
    assert_eq!(all.json["partial"], true);
    let rest = api
        .send(
            Method::DELETE,
            "/resources/image/upload",
            &[("all", "true"), ("next_cursor", &all.cursor().unwrap())],
            Body::Empty,
            true,
        )
        .await;
    assert_eq!(rest.json["deleted"].as_object().unwrap().len(), 2);
    assert!(emulator.resources().is_empty());
}

#[tokio::test]
async fn a_failing_delete_answers_500_and_deletes_nothing() {
    let opts = Options::default();
    let (emulator, api) = start(&opts);
    emulator.add_many(numbered_images(3));
    emulator.fail_deletes_of("photos/img-0001");

    let ids = json!({ "public_ids": ["photos/img-0000", "photos/img-0001"] });
    let failed = api.delete("/resources/image/upload", Body::Json(ids)).await;
    assert_eq!(failed.status, 500);
    assert!(failed.message().contains("photos/img-0001"));
    assert_eq!(emulator.resources().len(), 3);

    let by_prefix = api
        .delete(
            "/resources/image/upload",
            Body::Json(json!({ "prefix": "photos/" })),
        )
        .await;
    assert_eq!(by_prefix.status, 500);

    let others = json!({ "public_ids": ["photos/img-0000", "photos/img-0002"] });
    let ok = api
        .delete("/resources/image/upload", Body::Json(others))
        .await;
    assert_eq!(ok.status, 200);
    assert_eq!(emulator.resources().len(), 1);
}

#[tokio::test]
async fn rate_limit_headers_count_down_with_each_call() {
    let opts = Options {
        rate_limit: 10,
        ..Options::default()
    };
    let (_emulator, api) = start(&opts);
    let before = Utc::now();
    let mut remaining = Vec::new();
    for path in ["/ping", "/resources/image", "/resources/search", "/usage"] {
        let answer = api.get(path, &[]).await;
        assert_eq!(answer.status, 200, "{path}: {}", answer.json);
        assert_eq!(answer.header("x-featureratelimit-limit"), "10");
        remaining.push(answer.header("x-featureratelimit-remaining").to_owned());
        let reset = DateTime::parse_from_rfc2822(answer.header("x-featureratelimit-reset"))
            .unwrap_or_else(|e| panic!("reset is an HTTP date: {e}"));
        let until = reset.with_timezone(&Utc) - before;
        assert!(
            until > TimeDelta::minutes(59) && until <= TimeDelta::minutes(61),
            "the hour ends about an hour from now: {reset}"
        );
    }
    assert_eq!(remaining, ["9", "8", "7", "6"]);
}

#[tokio::test]
async fn a_spent_allowance_answers_420_until_the_window_resets() {
    let opts = Options {
        rate_limit: 50,
        ..Options::default()
    };
    let (emulator, api) = start(&opts);
    emulator.set_remaining(1);
    emulator.set_window_reset_in(Duration::from_secs(1));

    let last = api.get("/ping", &[]).await;
    assert_eq!(last.status, 200);
    assert_eq!(last.header("x-featureratelimit-remaining"), "0");
    let refused = api.get("/resources/image", &[]).await;
    assert_eq!(refused.status, 420);
    assert_eq!(refused.message(), "Rate limit exceeded");
    assert_eq!(refused.header("x-featureratelimit-remaining"), "0");
    assert_eq!(refused.header("x-featureratelimit-limit"), "50");
    DateTime::parse_from_rfc2822(refused.header("x-featureratelimit-reset")).expect("an HTTP date");

    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let again = api.get("/resources/image", &[]).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.header("x-featureratelimit-remaining"), "49");
    assert_eq!(emulator.calls(), 3);
}

#[tokio::test]
async fn fail_next_answers_the_status_without_spending_the_allowance() {
    let opts = Options::default();
    let (emulator, api) = start(&opts);
    emulator.fail_next(2, 500);
    for _ in 0..2 {
        let failed = api.get("/resources/image", &[]).await;
        assert_eq!(failed.status, 500);
        assert!(!failed.message().is_empty());
        assert_eq!(failed.header("x-featureratelimit-remaining"), "500");
    }
    let ok = api.get("/resources/image", &[]).await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.header("x-featureratelimit-remaining"), "499");

    emulator.fail_next(1, 420);
    let limited = api.get("/ping", &[]).await;
    assert_eq!(limited.status, 420);
    assert_eq!(limited.message(), "Rate limit exceeded");
    assert_eq!(limited.header("x-featureratelimit-remaining"), "499");

    assert_eq!(emulator.calls(), 4);
    assert_eq!(emulator.calls_to("/resources/image"), 3);
    emulator.reset_calls();
    assert_eq!(emulator.calls(), 0);
    assert_eq!(emulator.calls_to("/ping"), 0);
}

#[tokio::test]
async fn latency_delays_each_request_but_requests_wait_side_by_side() {
    let opts = Options {
        latency: Duration::from_millis(200),
        ..Options::default()
    };
    let (emulator, api) = start(&opts);
    let started = Instant::now();
    let answers = futures::future::join_all((0..10).map(|_| api.get("/ping", &[]))).await;
    let took = started.elapsed();
    for a in &answers {
        assert_eq!(a.status, 200);
        assert_eq!(a.json, json!({ "status": "ok" }));
    }
    assert!(
        took >= Duration::from_millis(200),
        "latency applied: {took:?}"
    );
    assert!(
        took < Duration::from_secs(2),
        "not one after the other: {took:?}"
    );
    assert_eq!(emulator.calls_to("GET /ping"), 10);
}

#[tokio::test]
async fn headers_can_be_left_out_and_usage_reports_the_store() {
    let opts = Options {
        rate_limit_headers: false,
        ..Options::default()
    };
    let (emulator, api) = start(&opts);
    emulator.add_many(numbered_images(3));
    let usage = api.get("/usage", &[]).await;
    assert_eq!(usage.status, 200);
    assert_eq!(usage.json["resources"], 3);
    assert_eq!(usage.json["storage"]["usage"], 3 * 4_096);
    assert!(usage.headers.get("x-featureratelimit-limit").is_none());

    let unknown = api.get("/no/such/endpoint", &[]).await;
    assert_eq!(unknown.status, 404);
    assert!(!unknown.message().is_empty());
}

/// `start` needs no runtime of the caller's: a plain test talks to it over a bare socket.
#[test]
fn the_emulator_serves_plain_tests_and_a_chosen_port() {
    use std::io::{Read as _, Write as _};

    let opts = Options::default();
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = probe.local_addr().unwrap().port();
    drop(probe);
    let emulator = Emulator::start_on(port, opts.clone());
    assert_eq!(emulator.base_url(), format!("http://127.0.0.1:{port}"));
    assert_eq!(
        emulator.cloudinary_url(),
        format!(
            "cloudinary://123456789012345:emulator-secret@demo-cloud?upload_prefix=http://127.0.0.1:{port}"
        )
    );

    let auth = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", opts.api_key, opts.api_secret));
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        conn,
        "GET /v1_1/demo-cloud/ping HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {auth}\r\n\
         Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with(r#"{"status":"ok"}"#), "{response}");
    assert_eq!(emulator.calls(), 1);
    drop(emulator);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "dropping the emulator stops it"
    );
}

#[test]
fn the_signature_is_the_one_of_cloudinarys_documented_example() {
    // The example of <https://cloudinary.com/documentation/authentication_signatures>.
    let params = [
        ("eager", "w_400,h_300,c_pad|w_260,h_200,c_crop"),
        ("public_id", "sample_image"),
        ("timestamp", "1315060510"),
    ];
    let expected = "bfd09f95f331f558cbd1320e67aa8d488770583e";
    assert_eq!(api_sign_request(&params, "abcd"), expected);
    // Order does not matter; file, cloud_name, resource_type, api_key, signature and empty values
    // are not signed.
    let mut more = params.to_vec();
    more.reverse();
    more.extend([
        ("file", "sample.jpg"),
        ("cloud_name", "demo"),
        ("resource_type", "image"),
        ("api_key", "1234"),
        ("signature", "whatever"),
        ("tags", ""),
    ]);
    assert_eq!(api_sign_request(&more, "abcd"), expected);
    assert_ne!(api_sign_request(&params, "abce"), expected);
}

#[tokio::test]
async fn rename_moves_an_asset_and_keeps_its_bytes_format_and_dates() {
    let opts = Options::default();
    let (emulator, api) = start(&opts);
    let mut original = Resource::image("old/name", at(10));
    original.bytes = 12_345;
    emulator.add_many([
        original,
        Resource::video("old/name", at(20)),
        Resource::image("other", at(30)),
    ]);

    let answer = api
        .upload(
            "/image/rename",
            emulator.signed_params(&[
                ("from_public_id", "old/name"),
                ("to_public_id", "new/place/name"),
                ("invalidate", "true"),
            ]),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.json);
    let r = &answer.json;
    assert_eq!(r["public_id"], "new/place/name");
    assert_eq!(r["bytes"], 12_345);
    assert_eq!(r["format"], "jpg");
    assert_eq!(r["resource_type"], "image");
    assert_eq!(r["type"], "upload");
    assert_eq!(r["created_at"], "2024-05-01T10:00:10Z");
    assert_eq!(r["version"], 1_714_557_610_i64);
    assert_eq!(r["folder"], "new/place");
    assert_eq!(
        r["secure_url"],
        "https://res.cloudinary.com/demo-cloud/image/upload/v1714557610/new/place/name.jpg"
    );
    assert_eq!(
        r["url"],
        "http://res.cloudinary.com/demo-cloud/image/upload/v1714557610/new/place/name.jpg"
    );
    assert!(!emulator.exists("image", "old/name"));
    assert!(
        emulator.exists("video", "old/name"),
        "only the image is renamed"
    );
    let stored = emulator
        .resources()
        .into_iter()
        .find(|r| r.public_id == "new/place/name")
        .expect("the renamed asset");
    assert_eq!(
        (stored.bytes, stored.created_at, stored.width),
        (12_345, at(10), Some(800))
    );
    let listed = api.get("/resources/image/upload", &[]).await;
    assert_eq!(listed.ids(), ["other", "new/place/name"]);

    // A JSON body works too, and `to_type` moves the asset to another delivery type.
    emulator.add(Resource::raw("docs/a.pdf", at(1)));
    let mut body = serde_json::Map::new();
    for (k, v) in emulator.signed_params(&[
        ("from_public_id", "docs/a.pdf"),
        ("to_public_id", "docs/b.pdf"),
        ("to_type", "private"),
    ]) {
        let value = match v.parse::<i64>() {
            Ok(n) if k == "timestamp" => json!(n),
            _ => json!(v),
        };
        body.insert(k, value);
    }
    let raw = api
        .send(
            Method::POST,
            "/raw/rename",
            &[],
            Body::Json(Value::Object(body)),
            false,
        )
        .await;
    assert_eq!(raw.status, 200, "{}", raw.json);
    assert_eq!(raw.json["type"], "private");
    assert_eq!(raw.json["format"], "");
    assert_eq!(
        raw.json["url"],
        "http://res.cloudinary.com/demo-cloud/raw/private/v1714557601/docs/b.pdf"
    );
    let private = api.get("/resources/raw/private", &[]).await;
    assert_eq!(private.ids(), ["docs/b.pdf"]);
    let uploaded = api.get("/resources/raw/upload", &[]).await;
    assert_eq!(uploaded.ids(), Vec::<String>::new());

    assert_eq!(emulator.calls_to("POST /image/rename"), 1);
    assert_eq!(emulator.calls_to("POST /raw/rename"), 1);
    assert_eq!(emulator.calls_to("/rename"), 2);
}

#[tokio::test]
async fn rename_checks_the_signature_key_and_timestamp() {
    let opts = Options::default();
    let (emulator, api) = start(&opts);
    emulator.add(Resource::image("a", at(0)));
    let params = [("from_public_id", "a"), ("to_public_id", "b")];
    let signed = || emulator.signed_params(&params);

    let wrong = api
        .upload(
            "/image/rename",
            replaced(signed(), "signature", &"0".repeat(40)),
        )
        .await;
    assert_eq!(wrong.status, 401);
    assert!(
        wrong.message().starts_with(&format!(
            "Invalid Signature {}. String to sign - 'from_public_id=a&timestamp=",
            "0".repeat(40)
        )),
        "{}",
        wrong.message()
    );

    let tampered = api
        .upload("/image/rename", replaced(signed(), "to_public_id", "c"))
        .await;
    assert_eq!(tampered.status, 401, "a parameter changed after signing");

    let other_secret = api
        .upload(
            "/image/rename",
            signed_with(&params, &opts.api_key, "not-the-secret"),
        )
        .await;
    assert_eq!(other_secret.status, 401);

    let unsigned = api
        .upload("/image/rename", without(signed(), "signature"))
        .await;
    assert_eq!(unsigned.status, 401);
    assert_eq!(unsigned.message(), "Missing required parameter - signature");

    let unknown_key = api
        .upload(
            "/image/rename",
            signed_with(&params, "999", &opts.api_secret),
        )
        .await;
    assert_eq!(unknown_key.status, 401);
    assert_eq!(unknown_key.message(), "Unknown API key 999");

    // Basic auth is the Admin API's; the Upload API does not take it.
    let basic = api
        .send(
            Method::POST,
            "/image/rename",
            &[],
            Body::Form(owned(&params)),
            true,
        )
        .await;
    assert_eq!(basic.status, 401);
    assert_eq!(basic.message(), "Must supply api_key");

    let now = Utc::now().timestamp();
    for stale in [now - 7_200, now + 7_200] {
        let stamp = stale.to_string();
        let mut with_time = params.to_vec();
        with_time.push(("timestamp", stamp.as_str()));
        let answer = api
            .upload("/image/rename", emulator.signed_params(&with_time))
            .await;
        assert_eq!(answer.status, 400, "timestamp {stamp}");
        assert!(
            answer.message().starts_with("Stale request"),
            "{}",
            answer.message()
        );
    }
    assert!(emulator.exists("image", "a"), "nothing moved so far");
    assert!(!emulator.exists("image", "b"));

    let a_minute_ago = (now - 60).to_string();
    let mut recent = params.to_vec();
    recent.push(("timestamp", a_minute_ago.as_str()));
    let ok = api
        .upload("/image/rename", emulator.signed_params(&recent))
        .await;
    assert_eq!(ok.status, 200, "{}", ok.json);
    assert!(emulator.exists("image", "b"));
    assert_eq!(emulator.calls_to("POST /image/rename"), 9);
}

#[tokio::test]
async fn renaming_an_asset_that_is_not_there_is_not_found() {
    let opts = Options::default();
    let (emulator, api) = start(&opts);
    emulator.add(Resource::image("photo", at(0)));

    for (path, params) in [
        (
            "/image/rename",
            vec![("from_public_id", "missing"), ("to_public_id", "x")],
        ),
        // Another delivery type, another resource type: other assets.
        (
            "/image/rename",
            vec![
                ("from_public_id", "photo"),
                ("to_public_id", "x"),
                ("type", "private"),
            ],
        ),
        (
            "/video/rename",
            vec![("from_public_id", "photo"), ("to_public_id", "x")],
        ),
    ] {
        let answer = api.upload(path, emulator.signed_params(&params)).await;
        assert_eq!(answer.status, 404, "{path} {params:?}");
        assert_eq!(
            answer.message(),
            format!("Resource not found - {}", params[0].1)
        );
    }
    assert_eq!(
        emulator.resources(),
        [Resource::image("photo", at(0))],
        "unchanged"
    );
}

#[tokio::test]
async fn renaming_onto_an_existing_asset_needs_overwrite() {
    let opts = Options::default();
    let (emulator, api) = start(&opts);
    let mut a = Resource::image("a", at(1));
    a.bytes = 111;
    let mut b = Resource::image("b", at(2));
    b.bytes = 222;
    emulator.add_many([a.clone(), b.clone()]);

    for overwrite in [None, Some("false")] {
        let mut params = vec![("from_public_id", "a"), ("to_public_id", "b")];
        params.extend(overwrite.map(|v| ("overwrite", v)));
        let refused = api
            .upload("/image/rename", emulator.signed_params(&params))
            .await;
        assert_eq!(refused.status, 400, "overwrite {overwrite:?}");
        assert_eq!(refused.message(), "to_public_id b already exists");
        assert_eq!(emulator.resources(), [a.clone(), b.clone()]);
    }

    let replaced = api
        .upload(
            "/image/rename",
            emulator.signed_params(&[
                ("from_public_id", "a"),
                ("to_public_id", "b"),
                ("overwrite", "true"),
            ]),
        )
        .await;
    assert_eq!(replaced.status, 200, "{}", replaced.json);
    assert_eq!(replaced.json["public_id"], "b");
    assert_eq!(replaced.json["bytes"], 111);
    let left = emulator.resources();
    assert_eq!(left.len(), 1);
    assert_eq!(
        (
            left[0].public_id.as_str(),
            left[0].bytes,
            left[0].created_at
        ),
        ("b", 111, at(1))
    );
}

#[tokio::test]
async fn renames_spend_none_of_the_admin_api_allowance_but_are_counted() {
    let opts = Options {
        rate_limit: 3,
        ..Options::default()
    };
    let (emulator, api) = start(&opts);
    emulator.add(Resource::image("a", at(0)));
    emulator.set_remaining(1);
    let rename = |from: &str, to: &str| {
        emulator.signed_params(&[("from_public_id", from), ("to_public_id", to)])
    };

    let first = api.upload("/image/rename", rename("a", "b")).await;
    assert_eq!(first.status, 200, "{}", first.json);
    for header in [
        "x-featureratelimit-limit",
        "x-featureratelimit-remaining",
        "x-featureratelimit-reset",
    ] {
        assert!(first.headers.get(header).is_none(), "{header}");
    }
    let ping = api.get("/ping", &[]).await;
    assert_eq!(ping.status, 200);
    assert_eq!(
        ping.header("x-featureratelimit-remaining"),
        "0",
        "the rename spent nothing"
    );

    let spent = api.upload("/image/rename", rename("b", "c")).await;
    assert_eq!(spent.status, 200, "renames go on with the allowance spent");
    let limited = api.get("/resources/image", &[]).await;
    assert_eq!(limited.status, 420);

    // fail_next is the Admin API's: a rename passes it by, the next Admin call meets it.
    emulator.fail_next(1, 503);
    let passed = api.upload("/image/rename", rename("c", "d")).await;
    assert_eq!(passed.status, 200);
    let failed = api.get("/ping", &[]).await;
    assert_eq!(failed.status, 503);

    assert!(emulator.exists("image", "d"));
    assert_eq!(emulator.calls_to("POST /image/rename"), 3);
    assert_eq!(emulator.calls_to("GET /"), 3);
    assert_eq!(emulator.calls(), 6);
}

#[tokio::test]
async fn fail_renames_of_answers_500_and_moves_nothing() {
    let opts = Options::default();
    let (emulator, api) = start(&opts);
    emulator.add_many([Resource::image("a", at(0)), Resource::image("c", at(1))]);
    emulator.fail_renames_of(&["a", "missing"]);
    let rename = |from: &str, to: &str| {
        emulator.signed_params(&[("from_public_id", from), ("to_public_id", to)])
    };

    let failed = api.upload("/image/rename", rename("a", "b")).await;
    assert_eq!(failed.status, 500);
    assert_eq!(failed.message(), "Internal error while renaming a");
    assert!(emulator.exists("image", "a"));
    assert!(!emulator.exists("image", "b"));

    let missing = api.upload("/image/rename", rename("missing", "b")).await;
    assert_eq!(missing.status, 500, "the failure comes before the lookup");

    let unsigned = api
        .upload(
            "/image/rename",
            owned(&[("from_public_id", "a"), ("to_public_id", "b")]),
        )
        .await;
    assert_eq!(unsigned.status, 401, "the signature is checked first");

    let other = api.upload("/image/rename", rename("c", "a2")).await;
    assert_eq!(other.status, 200, "{}", other.json);
    assert_eq!(emulator.calls_to("POST /image/rename"), 4);
}

#[tokio::test]
async fn refuse_renames_of_answers_its_status_and_moves_nothing() {
    let opts = Options::default();
    let (emulator, api) = start(&opts);
    emulator.add_many([Resource::image("a", at(0)), Resource::image("c", at(1))]);
    emulator.refuse_renames_of(&["a"], 400);
    let rename = |from: &str, to: &str| {
        emulator.signed_params(&[("from_public_id", from), ("to_public_id", to)])
    };

    let refused = api.upload("/image/rename", rename("a", "b")).await;
    assert_eq!(refused.status, 400);
    assert_eq!(refused.message(), "Asset a cannot be renamed");
    assert!(emulator.exists("image", "a"));
    assert!(!emulator.exists("image", "b"));

    let other = api.upload("/image/rename", rename("c", "d")).await;
    assert_eq!(other.status, 200, "{}", other.json);
}

// ---- Cloudinary's official Python SDK against the emulator ----

/// A Python that imports Cloudinary's official SDK (PyPI `cloudinary`): the one named by
/// `ASSETGC_TEST_CLOUDINARY_PYTHON` (`.ci/test` installs the SDK into its virtualenv and sets it),
/// else `target/ci/venv/bin/python` when it has the SDK. `None` (after saying so) when there is
/// none; with `CI=true` that fails the test instead.
fn python_with_cloudinary_sdk() -> Option<std::path::PathBuf> {
    let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ci/venv/bin/python");
    let candidates = std::env::var_os("ASSETGC_TEST_CLOUDINARY_PYTHON")
        .map(std::path::PathBuf::from)
        .into_iter()
        .chain([venv]);
    for python in candidates {
        let imports = std::process::Command::new(&python)
            .args(["-c", "import cloudinary"])
            .output()
            .is_ok_and(|o| o.status.success());
        if imports {
            return Some(python);
        }
    }
    let in_ci = std::env::var("CI").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"));
    assert!(
        !in_ci,
        "no Python with Cloudinary's SDK (PyPI `cloudinary`): in CI (CI=true) no test may be \
         skipped; set ASSETGC_TEST_CLOUDINARY_PYTHON or run the tests through .ci/test"
    );
    eprintln!(
        "skipped: official_python_sdk_agrees_with_the_emulator needs Cloudinary's Python SDK \
         (set ASSETGC_TEST_CLOUDINARY_PYTHON to a Python that imports `cloudinary`)"
    );
    None
}

/// The emulator answers Cloudinary's official Python SDK as the service would:
/// `tests/sdk/cloudinary_sdk_check.py` pages `resources` and a `Search` by `next_cursor`, reads
/// `resources_by_ids`, `delete_resources`, the Upload API's `rename` (`overwrite = false` refused
/// onto an existing public_id, `invalidate = true`) and the rate-limit fields the SDK reads from
/// the Admin API's headers, and asserts every answer.
#[test]
fn official_python_sdk_agrees_with_the_emulator() {
    let Some(python) = python_with_cloudinary_sdk() else {
        return;
    };
    let emulator = Emulator::start(Options::default());
    let start = Utc::now() - TimeDelta::hours(2);
    for i in 1..=5 {
        emulator.add(Resource::image(
            &format!("sdk/img{i}"),
            start + TimeDelta::minutes(i),
        ));
    }
    emulator.add(Resource::video("sdk/clip", start));
    emulator.add(Resource::raw("sdk/notes.txt", start));
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/cloudinary_sdk_check.py");
    let out = std::process::Command::new(&python)
        .arg(&script)
        .env("CLOUDINARY_URL", emulator.cloudinary_url())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("run the SDK check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the SDK check failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("every check passed"), "{stdout}");
    assert!(
        emulator.calls_to("/rename") >= 3,
        "the renames reached the emulator"
    );
}
