//! A bucket on the moto S3 server the tests were given, and exact puts into it.

use std::time::SystemTime;

use assetgc::store::s3::{S3Settings, S3Store};

/// Key characters left as they are in a request path; everything else is percent-encoded.
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A fresh bucket on the moto server the tests were given, and raw puts into it.
pub struct Bucket {
    pub endpoint: String,
    pub name: String,
    http: reqwest::Client,
}

impl Bucket {
    /// A bucket of its own for one test.
    pub async fn create(endpoint: &str) -> Bucket {
        // Tests of one binary run at once and the clock can give two of them one reading: a
        // counter keeps their buckets apart.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        Bucket::create_named(endpoint, &format!("assetgc-{nanos:x}-{n}")).await
    }

    /// A bucket by name, not created: for tests of buckets that do not exist or servers that do
    /// not answer.
    pub fn named(endpoint: &str, name: &str) -> Bucket {
        Bucket {
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            name: name.to_owned(),
            http: reqwest::Client::new(),
        }
    }

    /// A bucket with a fixed name (Cloudcube's `cloud-cube-us2`), created when missing.
    pub async fn create_named(endpoint: &str, name: &str) -> Bucket {
        let bucket = Bucket {
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            name: name.to_owned(),
            http: reqwest::Client::new(),
        };
        let resp = bucket
            .http
            .put(format!("{}/{}", bucket.endpoint, bucket.name))
            .send()
            .await
            .unwrap_or_else(|e| panic!("create bucket on {endpoint}: {e}"));
        let owned = resp.status() == reqwest::StatusCode::CONFLICT;
        assert!(
            resp.status().is_success() || owned,
            "create bucket: {resp:?}"
        );
        bucket
    }

    pub fn store(&self, prefix: &str, list_concurrency: usize) -> S3Store {
        S3Store::new(
            "test",
            S3Settings {
                bucket: self.name.clone(),
                prefix: prefix.to_owned(),
                endpoint: Some(self.endpoint.clone()),
                region: "us-east-1".to_owned(),
                // moto treats unsigned look-ups as anonymous and refuses them; it checks no
                // signature, so any key pair does.
                access_key_id: Some("testing".to_owned()),
                secret_access_key: Some("testing".to_owned()),
                session_token: None,
                allow_http: true,
                virtual_hosted_style: false,
                list_concurrency,
            },
        )
        .expect("an S3 store over moto")
    }

    /// Puts `body` under the bucket-absolute `key`, spelt exactly: a key with a `.` or `..`
    /// segment goes over a plain socket, since every URL library folds such segments away.
    pub async fn put(&self, key: &str, body: &[u8]) {
        let path: Vec<String> = key
            .split('/')
            .map(|s| percent_encoding::utf8_percent_encode(s, PATH_SEGMENT).to_string())
            .collect();
        let path = format!("/{}/{}", self.name, path.join("/"));
        if key.split('/').any(|s| s == "." || s == "..") {
            self.put_raw(&path, body).await;
            return;
        }
        let resp = self
            .http
            .put(format!("{}{path}", self.endpoint))
            // Without it moto reads the body as a form and stores nothing.
            .header("content-type", "application/octet-stream")
            .body(body.to_vec())
            .send()
            .await
            .unwrap_or_else(|e| panic!("put {key:?}: {e}"));
        assert!(resp.status().is_success(), "put {key:?}: {resp:?}");
    }

    pub async fn put_raw(&self, path: &str, body: &[u8]) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let host = self
            .endpoint
            .strip_prefix("http://")
            .expect("moto is reached over http");
        let mut conn = tokio::net::TcpStream::connect(host)
            .await
            .unwrap_or_else(|e| panic!("connect to {host}: {e}"));
        let head = format!(
            "PUT {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/octet-stream\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        conn.write_all(head.as_bytes()).await.expect("send a put");
        conn.write_all(body).await.expect("send a body");
        let mut answer = String::new();
        conn.read_to_string(&mut answer)
            .await
            .expect("read the answer");
        assert!(
            answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200"),
            "put {path}: {answer}"
        );
    }
}
