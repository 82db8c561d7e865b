//! The OpenAPI document and its UI: open to all, and describing every route.

use crate::helpers::spawn_app_with;

#[actix_web::test]
async fn the_openapi_document_lists_every_route_without_a_key() {
    let app = spawn_app_with(&[("BOOKING_ADMIN_KEYS", "admin-key-1")]);
    let document = app.get("/api/openapi.json").await;
    assert_eq!(document.status, 200);
    assert!(document.content_type.starts_with("application/json"));
    assert!(document.body["openapi"]
        .as_str()
        .unwrap()
        .starts_with("3.1"));
    let paths = document.body["paths"].as_object().unwrap();
    for (path, method) in [
        ("/api/initialize", "post"),
        ("/api/book", "post"),
        ("/api/cancel", "post"),
        ("/api/status/{eventId}", "get"),
        ("/api/status/{eventId}/{userId}", "get"),
        ("/health", "get"),
    ] {
        assert!(paths[path][method].is_object(), "{path} {method}");
    }
    let book = &paths["/api/book"]["post"];
    for status in [
        "200", "400", "401", "404", "409", "413", "422", "429", "503",
    ] {
        assert!(book["responses"][status].is_object(), "book {status}");
    }
    // The same header, described once, on every route that changes something.
    let key = &book["parameters"][0];
    assert_eq!(key["name"], "Idempotency-Key");
    assert_eq!(key["in"], "header");
    assert!(key["schema"]["pattern"].is_string(), "{key}");
    for path in ["/api/cancel", "/api/initialize"] {
        assert_eq!(&paths[path]["post"]["parameters"][0], key, "{path}");
    }
    assert!(book["responses"]["200"]["headers"]["Idempotent-Replayed"].is_object());
    assert!(book["responses"]["429"]["headers"]["Retry-After"].is_object());
    assert!(document.body["components"]["securitySchemes"]["bearer"].is_object());
    let posted = app.post("/api/openapi.json", &serde_json::json!({})).await;
    assert_eq!(posted.status, 405);
    assert_eq!(posted.header("allow"), Some("GET, HEAD"));
}

#[actix_web::test]
async fn the_docs_page_is_served_from_the_binary() {
    let app = spawn_app_with(&[("BOOKING_ADMIN_KEYS", "admin-key-1")]);
    let page = app.get("/docs/").await;
    assert_eq!(page.status, 200);
    assert!(
        page.content_type.starts_with("text/html"),
        "{}",
        page.content_type
    );
    assert!(
        String::from_utf8_lossy(&page.raw).contains("swagger"),
        "not the Swagger UI page"
    );
}
