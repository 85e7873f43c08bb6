#![allow(clippy::unwrap_used)]

use super::*;

fn payload(frame: &Frame) -> Value {
    serde_json::from_slice(&frame.payload).unwrap()
}

fn err(result: Result<Value, BedrockError>) -> String {
    let BedrockError::Validation(message) = result.unwrap_err();
    message
}

// Known answers from botocore tests/unit/test_eventstream.py
// (PAYLOAD_ONE_STR_HEADER, EMPTY_MESSAGE, and the frame in
// test_event_stream_initial_response), which botocore's decoder accepts.
#[test]
fn encoder_matches_botocore_vectors() {
    let one_header: &[u8] = b"\x00\x00\x00=\x00\x00\x00 \x07\xfd\x83\x96\x0ccontent-type\x07\x00\x10application/json{'foo':'bar'}\x8d\x9c\x08\xb1";
    assert_eq!(
        encode_frame(&[("content-type", "application/json")], b"{'foo':'bar'}"),
        one_header
    );
    let empty: &[u8] = b"\x00\x00\x00\x10\x00\x00\x00\x00\x05\xc2H\xeb}\x98\xc8\xff";
    assert_eq!(encode_frame(&[], b""), empty);
    let initial: &[u8] = b"\x00\x00\x00~\x00\x00\x00O\xc5\xa3\xdd\xc6\r:message-type\x07\x00\x05event\x0b:event-type\x07\x00\x10initial-response\r:content-type\x07\x00\ttext/json{\"InitialResponse\": \"sometext\"}\xf6\x98$\x83";
    let headers = [
        (":message-type", "event"),
        (":event-type", "initial-response"),
        (":content-type", "text/json"),
    ];
    assert_eq!(
        encode_frame(&headers, br#"{"InitialResponse": "sometext"}"#),
        initial
    );
    let decoded = decode_frames(&[one_header, empty, initial].concat()).unwrap();
    assert_eq!(decoded.len(), 3);
    assert_eq!(decoded[2].header(":event-type"), Some("initial-response"));
    assert_eq!(decoded[0].payload, b"{'foo':'bar'}");
}

#[test]
fn round_trip_and_corruption() {
    let frame = event_frame(
        "contentBlockDelta",
        &json!({"contentBlockIndex": 0, "delta": {"text": "hé"}}),
    );
    let decoded = decode_frames(&frame).unwrap();
    assert_eq!(decoded.len(), 1);
    assert_eq!(
        decoded[0].headers,
        vec![
            (":event-type".to_owned(), "contentBlockDelta".to_owned()),
            (":content-type".to_owned(), "application/json".to_owned()),
            (":message-type".to_owned(), "event".to_owned()),
        ]
    );
    assert_eq!(payload(&decoded[0])["delta"]["text"], "hé");

    // Every single flipped byte is caught by one of the two CRCs (or the
    // lengths it protects).
    for i in 0..frame.len() {
        let mut bad = frame.clone();
        bad[i] ^= 0x01;
        assert!(decode_frames(&bad).is_err(), "flip at {i} not detected");
    }
    assert!(decode_frames(&frame[..frame.len() - 1]).is_err());
}

#[test]
fn exception_frame_shape() {
    let decoded = decode_frames(&exception_frame("modelStreamErrorException", "boom")).unwrap();
    let frame = &decoded[0];
    assert_eq!(frame.header(":message-type"), Some("exception"));
    assert_eq!(
        frame.header(":exception-type"),
        Some("modelStreamErrorException")
    );
    assert_eq!(frame.header(":content-type"), Some("application/json"));
    assert_eq!(payload(frame), json!({"message": "boom"}));
}

#[test]
fn request_mapping() {
    let converse = json!({
        "system": [{"text": "be brief"}, {"cachePoint": {"type": "default"}}, {"text": "be kind"}],
        "messages": [
            {"role": "user", "content": [{"text": "hi"}, {"text": "there"}]},
            {"role": "assistant", "content": [{"text": "hello"}]},
            {"role": "user", "content": [{"text": "bye"}]}
        ],
        "inferenceConfig": {"maxTokens": 64, "temperature": 0.5, "topP": 0.9, "stopSequences": ["END"]},
        "requestMetadata": {"tenant": "secret"},
        "additionalModelResponseFieldPaths": ["/stop_sequence"]
    });
    let chat = chat_request(&converse, "gpt-x", false).unwrap();
    assert_eq!(
        chat,
        json!({
            "model": "gpt-x",
            "messages": [
                {"role": "system", "content": "be brief\nbe kind"},
                {"role": "user", "content": "hi\nthere"},
                {"role": "assistant", "content": "hello"},
                {"role": "user", "content": "bye"}
            ],
            "max_tokens": 64, "temperature": 0.5, "top_p": 0.9, "stop": ["END"]
        })
    );
    assert!(!chat.to_string().contains("secret"));

    let streamed = chat_request(
        &json!({"messages": [{"role": "user", "content": [{"text": "x"}]}]}),
        "m",
        true,
    )
    .unwrap();
    assert_eq!(streamed["stream"], true);
    assert_eq!(streamed["stream_options"], json!({"include_usage": true}));
    assert!(streamed.get("max_tokens").is_none());
}

#[test]
fn request_rejections() {
    let with = |extra: Value| {
        let mut body = json!({"messages": [{"role": "user", "content": [{"text": "x"}]}]});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        err(chat_request(&body, "m", false))
    };
    let image = json!({"role": "user", "content": [{"text": "look"}, {"image": {"format": "png", "source": {"bytes": "AA=="}}}]});
    assert!(with(json!({"messages": [image]})).contains("image"));
    let tool =
        json!({"role": "user", "content": [{"toolResult": {"toolUseId": "t", "content": []}}]});
    assert!(with(json!({"messages": [tool]})).contains("toolResult"));
    assert!(with(json!({"additionalModelRequestFields": {"top_k": 5}}))
        .contains("additionalModelRequestFields"));
    assert!(with(json!({"toolConfig": {"tools": []}})).contains("toolConfig"));
    assert!(with(json!({"bogus": 1})).contains("bogus"));
    assert!(with(json!({"inferenceConfig": {"topK": 5}})).contains("topK"));
    assert!(with(json!({"inferenceConfig": {"maxTokens": 0}})).contains("maxTokens"));
    assert!(with(json!({"messages": []})).contains("non-empty"));
    assert!(
        with(json!({"messages": [{"role": "system", "content": [{"text": "x"}]}]}))
            .contains("role")
    );
    assert!(err(chat_request(&json!({}), "m", false)).contains("messages"));
    assert!(err(chat_request(&json!([]), "m", false)).contains("object"));
}

#[test]
fn response_mapping() {
    let chat = json!({
        "id": "c1", "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi!"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    });
    assert_eq!(
        converse_response(&chat, 42).unwrap(),
        json!({
            "output": {"message": {"role": "assistant", "content": [{"text": "hi!"}]}},
            "stopReason": "end_turn",
            "usage": {"inputTokens": 7, "outputTokens": 3, "totalTokens": 10},
            "metrics": {"latencyMs": 42}
        })
    );
    for (finish, stop) in [
        ("length", "max_tokens"),
        ("content_filter", "content_filtered"),
        ("tool_calls", "tool_use"),
        ("weird", "end_turn"),
    ] {
        let chat = json!({"choices": [{"message": {"content": "x"}, "finish_reason": finish}]});
        let out = converse_response(&chat, 0).unwrap();
        assert_eq!(out["stopReason"], stop);
        assert_eq!(out["usage"]["totalTokens"], 0);
    }
    assert!(converse_response(&json!({"choices": []}), 0).is_err());
}

#[test]
fn streamed_sequence() {
    let chunk = |delta: Value, finish: Value| json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    let mut t = StreamTranslator::new();
    let mut frames = Vec::new();
    frames.extend(t.push(&chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )));
    for piece in ["Hel", "lo", " world"] {
        frames.extend(t.push(&chunk(json!({"content": piece}), Value::Null)));
    }
    frames.extend(t.push(&chunk(json!({}), json!("length"))));
    let usage = json!({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}});
    assert!(t.push(&usage).is_empty());
    frames.extend(t.finish(120));
    assert!(t.finish(120).is_empty());

    let decoded = decode_frames(&frames.concat()).unwrap();
    let kinds: Vec<_> = decoded
        .iter()
        .map(|f| f.header(":event-type").unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "messageStart",
            "contentBlockDelta",
            "contentBlockDelta",
            "contentBlockDelta",
            "contentBlockStop",
            "messageStop",
            "metadata"
        ]
    );
    assert_eq!(payload(&decoded[0]), json!({"role": "assistant"}));
    assert_eq!(
        payload(&decoded[2]),
        json!({"contentBlockIndex": 0, "delta": {"text": "lo"}})
    );
    assert_eq!(payload(&decoded[4]), json!({"contentBlockIndex": 0}));
    assert_eq!(payload(&decoded[5]), json!({"stopReason": "max_tokens"}));
    assert_eq!(
        payload(&decoded[6]),
        json!({"usage": {"inputTokens": 5, "outputTokens": 3, "totalTokens": 8}, "metrics": {"latencyMs": 120}})
    );
}

#[test]
fn stream_without_finish_reason_still_closes() {
    let mut t = StreamTranslator::new();
    let decoded = decode_frames(&t.finish(1).concat()).unwrap();
    let kinds: Vec<_> = decoded
        .iter()
        .map(|f| f.header(":event-type").unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "messageStart",
            "contentBlockStop",
            "messageStop",
            "metadata"
        ]
    );
    assert_eq!(payload(&decoded[2])["stopReason"], "end_turn");
}

#[test]
fn error_responses() {
    let (status, code, body) = error_response(ErrorKind::Validation, "bad");
    assert_eq!((status, code), (400, "ValidationException"));
    assert_eq!(
        body,
        json!({"__type": "ValidationException", "message": "bad"})
    );
    assert_eq!(error_response(ErrorKind::AccessDenied, "").0, 403);
    assert_eq!(
        error_response(ErrorKind::NotFound, "").1,
        "ResourceNotFoundException"
    );
    assert_eq!(error_response(ErrorKind::Throttling, "").0, 429);
    assert_eq!(error_response(ErrorKind::ServiceUnavailable, "").0, 503);
    assert_eq!(
        error_response(ErrorKind::Internal, "").1,
        "InternalServerException"
    );
    assert_eq!(error_response(ErrorKind::ModelTimeout, "").0, 408);
    assert_eq!(
        ErrorKind::Throttling.stream_exception_type(),
        "throttlingException"
    );
}
