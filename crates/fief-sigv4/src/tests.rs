use super::*;

// AWS's published SigV4 test suite, case "get-vanilla".
const SECRET: &[u8] = b"wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const VANILLA_AUTH: &str = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31";
const VANILLA_HEADERS: &[(&str, &str)] = &[
    ("Host", "example.amazonaws.com"),
    ("X-Amz-Date", "20150830T123600Z"),
];

fn empty_body() -> [u8; 32] {
    Sha256::digest(b"").into()
}

fn vanilla() -> Request<'static> {
    Request {
        method: "GET",
        raw_path: "/",
        raw_query: "",
        headers: VANILLA_HEADERS,
        body_sha256: empty_body(),
    }
}

fn at(amz: &str) -> i64 {
    parse_amz_date(amz).unwrap()
}

#[test]
fn aws_test_vector_verifies() {
    let checked = check(&vanilla(), VANILLA_AUTH, at("20150830T123600Z")).unwrap();
    assert_eq!(checked.authorization.access_key_id, "AKIDEXAMPLE");
    let key = signing_key(SECRET, "20150830", "us-east-1", "service");
    verify(&checked, &key).unwrap();
    // The signing side agrees with AWS's expected header byte for byte.
    let signed = sign(
        &vanilla(),
        "AKIDEXAMPLE",
        SECRET,
        "us-east-1",
        "service",
        "20150830T123600Z",
    )
    .unwrap();
    assert_eq!(signed, VANILLA_AUTH);
}

#[test]
fn a_wrong_secret_or_an_altered_request_is_a_mismatch() {
    let now = at("20150830T123600Z");
    let checked = check(&vanilla(), VANILLA_AUTH, now).unwrap();
    let wrong = signing_key(b"not-the-secret", "20150830", "us-east-1", "service");
    assert_eq!(verify(&checked, &wrong), Err(SigV4Error::Mismatch));

    let key = signing_key(SECRET, "20150830", "us-east-1", "service");
    for altered in [
        Request {
            method: "POST",
            ..vanilla()
        },
        Request {
            raw_path: "/other",
            ..vanilla()
        },
        Request {
            raw_query: "a=1",
            ..vanilla()
        },
        Request {
            body_sha256: Sha256::digest(b"x").into(),
            ..vanilla()
        },
        Request {
            headers: &[("Host", "evil.example"), ("X-Amz-Date", "20150830T123600Z")],
            ..vanilla()
        },
    ] {
        let checked = check(&altered, VANILLA_AUTH, now).unwrap();
        assert_eq!(verify(&checked, &key), Err(SigV4Error::Mismatch));
    }
}

#[test]
fn the_date_window_refuses_replays_and_future_dates() {
    let signed = at("20150830T123600Z");
    assert!(check(&vanilla(), VANILLA_AUTH, signed + WINDOW_SECS).is_ok());
    assert!(check(&vanilla(), VANILLA_AUTH, signed - WINDOW_SECS).is_ok());
    for now in [signed + 20 * 60, signed - 20 * 60] {
        let e = check(&vanilla(), VANILLA_AUTH, now).unwrap_err();
        assert!(matches!(e, SigV4Error::Expired { .. }), "{e}");
        assert!(e.to_string().contains("replayed"), "{e}");
    }
}

#[test]
fn host_and_date_must_be_signed_and_present() {
    let now = at("20150830T123600Z");
    let only_host = VANILLA_AUTH.replace("host;x-amz-date", "host");
    assert_eq!(
        check(&vanilla(), &only_host, now).unwrap_err(),
        SigV4Error::UnsignedHeader("x-amz-date")
    );
    let no_date = Request {
        headers: &[("Host", "example.amazonaws.com")],
        ..vanilla()
    };
    assert_eq!(
        check(&no_date, VANILLA_AUTH, now).unwrap_err(),
        SigV4Error::MissingDate
    );
    let extra = VANILLA_AUTH.replace("host;x-amz-date", "host;x-amz-date;x-missing");
    assert_eq!(
        check(&vanilla(), &extra, now).unwrap_err(),
        SigV4Error::MissingHeader("x-missing".into())
    );
    let wrong_day = VANILLA_AUTH.replace("/20150830/", "/20150831/");
    assert!(matches!(
        check(&vanilla(), &wrong_day, now).unwrap_err(),
        SigV4Error::ScopeDate { .. }
    ));
}

#[test]
fn the_claimed_payload_hash_must_be_the_body_s() {
    let now = at("20150830T123600Z");
    let body = b"{\"inputs\":[1]}";
    let real = hex::encode(Sha256::digest(body));
    let headers_with = |h: &'static str| -> Vec<(&'static str, &'static str)> {
        vec![
            ("Host", "example.amazonaws.com"),
            ("X-Amz-Date", "20150830T123600Z"),
            ("X-Amz-Content-SHA256", h),
        ]
    };
    let real_static: &'static str = Box::leak(real.into_boxed_str());
    for (claimed, want) in [
        (real_static, None),
        ("UNSIGNED-PAYLOAD", Some(SigV4Error::UnsignedPayload)),
        (
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            Some(SigV4Error::PayloadHash),
        ),
    ] {
        let headers = headers_with(claimed);
        let req = Request {
            method: "POST",
            raw_path: "/endpoints/shared/invocations",
            raw_query: "",
            headers: &headers,
            body_sha256: Sha256::digest(body).into(),
        };
        let auth = sign(
            &req,
            "AKID",
            SECRET,
            "us-east-1",
            "sagemaker",
            "20150830T123600Z",
        )
        .unwrap();
        match (check(&req, &auth, now), want) {
            (Ok(c), None) => verify(
                &c,
                &signing_key(SECRET, "20150830", "us-east-1", "sagemaker"),
            )
            .unwrap(),
            (Err(e), Some(w)) => assert_eq!(e, w),
            (got, want) => panic!("{claimed}: {got:?} vs {want:?}"),
        }
    }
}

#[test]
fn malformed_headers_say_what_is_wrong() {
    for bad in [
        "AWS4-HMAC-SHA256",
        "AWS4-HMAC-SHA256 Credential=a/20150830/r/s/aws4_request",
        "AWS4-HMAC-SHA256 Credential=a/2015083/r/s/aws4_request, SignedHeaders=host, Signature=00",
        "AWS4-HMAC-SHA256 Credential=a/20150830/r/s/other, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        "AWS4-HMAC-SHA256 Credential=a/20150830/r/s/aws4_request, SignedHeaders=Host, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        "AWS4-HMAC-SHA256 Credential=a/20150830/r/s/aws4_request, SignedHeaders=host, Signature=zz",
        "AWS4-HMAC-SHA256 Credential=a/20150830/r/s/aws4_request, Credential=b, SignedHeaders=host, Signature=00",
    ] {
        assert!(matches!(parse_authorization(bad), Err(SigV4Error::Malformed(_))), "{bad}");
    }
    assert!(is_sigv4(VANILLA_AUTH));
    assert!(!is_sigv4("Bearer fief_x"));
    assert!(!is_sigv4("AWS4-HMAC-SHA256x"));
    // A bare algorithm is a (malformed) signature, not a bearer token.
    assert!(is_sigv4("AWS4-HMAC-SHA256"));
}

#[test]
fn paths_are_normalised_and_encoded_once_more_like_botocore() {
    assert_eq!(normalize_path(""), "/");
    assert_eq!(normalize_path("/a/./b/../c/"), "/a/c/");
    assert_eq!(normalize_path("//a//b"), "/a/b");
    // botocore sends `org%2FLarge-1` in the path and signs `org%252FLarge-1`.
    assert_eq!(
        encode("/model/org%2FLarge-1/converse", "/~"),
        "/model/org%252FLarge-1/converse"
    );
    assert_eq!(canonical_query("b=2&a=1&a=0"), "a=0&a=1&b=2");
}

#[test]
fn dates_print_and_parse_back() {
    for unix in [0, 1_440_938_160, 1_796_342_400, 4_102_444_799, 951_782_400] {
        assert_eq!(
            parse_amz_date(&amz_date(unix)).unwrap(),
            unix,
            "{}",
            amz_date(unix)
        );
    }
    assert_eq!(amz_date(1_440_938_160), "20150830T123600Z");
    assert_eq!(amz_date(951_782_400), "20000229T000000Z");
}

#[test]
fn dates_parse_to_unix_seconds() {
    assert_eq!(parse_amz_date("19700101T000000Z").unwrap(), 0);
    assert_eq!(parse_amz_date("20150830T123600Z").unwrap(), 1_440_938_160);
    for bad in [
        "2015-08-30T12:36:00Z",
        "20151330T123600Z",
        "20150830T123600",
        "20150830T1236000",
    ] {
        assert!(parse_amz_date(bad).is_err(), "{bad}");
    }
}
