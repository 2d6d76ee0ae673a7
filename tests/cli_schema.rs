//! `schema discover|show|diff|approve` and `schema private add|remove` against the real binary,
//! with the sample ERP in SQLite.

use serde_json::{Value, json};

use crate::cli_configure::Sandbox;
use crate::support::sample_erp;

const URL: &str = "wss://console.example.com/ws";

/// A configured sandbox with the sample ERP as connection `erp`.
fn erp_sandbox(tag: &str) -> Sandbox {
    let sandbox = Sandbox::new(tag);
    sandbox.configure(URL);
    let erp = sample_erp();
    sandbox
        .run(&["db", "add", "--name", "erp", "--type", "sqlite", "--path", erp.to_str().unwrap()], None)
        .ok();
    sandbox
}

fn table<'a>(schema: &'a Value, name: &str) -> Option<&'a Value> {
    schema["tables"].as_array().unwrap().iter().find(|t| t["name"] == name)
}

fn column_names(table: &Value) -> Vec<&str> {
    table["columns"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect()
}

#[test]
fn discover_saves_the_local_copy_and_show_prints_it() {
    let sandbox = erp_sandbox("schema-discover");
    let out = sandbox.run(&["schema", "discover", "--json"], None).ok().json();
    let report = &out["connections"][0];
    assert_eq!(report["name"], "erp");
    assert_eq!(report["ok"], true);
    assert_eq!(report["tables"], 5, "{out}");
    assert_eq!(report["views"], 1, "{out}");
    assert!(report["columns"].as_u64().unwrap() > 20, "{out}");

    let file = sandbox.path("etc/schema/erp.json");
    assert_eq!(report["file"], file.to_str().unwrap());
    let saved: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(saved["connection"], "erp");
    assert_eq!(saved["dbType"], "sqlite");
    assert!(table(&saved, "customers").is_some(), "{saved}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    }

    // The text summary.
    let text = sandbox.run(&["schema", "discover", "--connection", "erp"], None).ok();
    assert!(text.stdout.contains("5 tables, 1 views"), "{text:?}");

    // `show --json`: the saved schema with privacy marks.
    let shown = sandbox.run(&["schema", "show", "--connection", "erp", "--json"], None).ok().json();
    let schemas = shown["schemas"].as_array().unwrap();
    assert_eq!(schemas.len(), 1);
    let schema = &schemas[0];
    assert_eq!(schema["connection"], "erp");
    assert_eq!(schema["dbType"], "sqlite");
    let customers = table(schema, "customers").unwrap();
    assert_eq!(customers["kind"], "table");
    assert_eq!(customers["primaryKey"], json!(["id"]));
    assert_eq!(customers["private"], false);
    assert_eq!(customers["approved"], true);
    assert!(customers["rowCountEstimate"].as_u64().unwrap() > 0);
    let id = &customers["columns"][0];
    assert_eq!(id["name"], "id");
    assert_eq!(id["nullable"], false);
    assert_eq!(id["private"], false);
    assert!(id["dataType"].is_string() && id["wireType"].is_string(), "{id}");
    let invoices = table(schema, "invoices").unwrap();
    assert_eq!(invoices["foreignKeys"][0]["refTable"], "orders");

    let text = sandbox.run(&["schema", "show"], None).ok();
    assert!(text.stdout.contains("erp (sqlite)"), "{text:?}");
    assert!(text.stdout.contains("customers") && text.stdout.contains("PK"), "{text:?}");
    assert!(text.stdout.contains("foreign key (order_id) -> orders(id)"), "{text:?}");
    assert!(!text.stdout.contains("[private]"), "{text:?}");
}

#[test]
fn private_tables_and_columns_are_left_out_of_the_visible_schema() {
    let sandbox = erp_sandbox("schema-private");
    sandbox.run(&["schema", "discover"], None).ok();
    let out =
        sandbox.run(&["schema", "private", "add", "--connection", "erp", "--table", "invoices"], None).ok();
    assert!(out.stdout.contains("now private"), "{out:?}");
    sandbox
        .run(&["schema", "private", "add", "--connection", "erp", "--column", "customers.email"], None)
        .ok();
    // Adding it again changes nothing.
    let again =
        sandbox.run(&["schema", "private", "add", "--connection", "erp", "--table", "invoices"], None).ok();
    assert!(again.stdout.contains("already"), "{again:?}");

    let config = sandbox.config_json();
    assert_eq!(config["schemaPolicy"]["erp"]["privateTables"], json!(["invoices"]));
    assert_eq!(config["schemaPolicy"]["erp"]["privateColumns"], json!({ "customers": ["email"] }));
    assert_eq!(config["connections"][0]["name"], "erp", "the rest of the config is kept");

    // What the cloud would receive.
    let visible = sandbox.run(&["schema", "show", "--visible", "--json"], None).ok();
    assert!(!visible.stdout.contains("invoices"), "{visible:?}");
    assert!(!visible.stdout.contains("email"), "{visible:?}");
    let visible = visible.json();
    let schema = &visible["schemas"][0];
    let customers = table(schema, "customers").unwrap();
    assert!(column_names(customers).contains(&"name"));
    assert!(customers.get("private").is_none(), "no marks in the broadcast form: {customers}");
    let text = sandbox.run(&["schema", "show", "--visible"], None).ok();
    assert!(!text.stdout.contains("invoices") && !text.stdout.contains("email"), "{text:?}");

    // The full local view marks them.
    let full = sandbox.run(&["schema", "show", "--json"], None).ok().json();
    let schema = &full["schemas"][0];
    assert_eq!(table(schema, "invoices").unwrap()["private"], true);
    let customers = table(schema, "customers").unwrap();
    let email = customers["columns"].as_array().unwrap().iter().find(|c| c["name"] == "email").unwrap();
    assert_eq!(email["private"], true);
    let text = sandbox.run(&["schema", "show"], None).ok();
    assert_eq!(text.stdout.matches("[private]").count(), 2, "{text:?}");

    // Remove both again: the policy section disappears.
    sandbox
        .run(&["schema", "private", "remove", "--connection", "erp", "--column", "customers.email"], None)
        .ok();
    sandbox.run(&["schema", "private", "remove", "--connection", "erp", "--table", "invoices"], None).ok();
    assert!(sandbox.config_json().get("schemaPolicy").is_none(), "{}", sandbox.config_json());

    // Bad usage: both or neither of --table / --column, a column without a table.
    let out = sandbox.run(&["schema", "private", "add", "--connection", "erp"], None);
    assert_eq!(out.code, Some(2), "{out:?}");
    let out = sandbox.run(&["schema", "private", "add", "--connection", "erp", "--column", "email"], None);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("TABLE.COLUMN"), "{out:?}");
}

#[test]
fn approve_sets_the_approved_tables() {
    let sandbox = erp_sandbox("schema-approve");
    // Nothing discovered yet: say what to run.
    let out = sandbox.run(&["schema", "approve", "--connection", "erp"], None);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("schema discover"), "{out:?}");

    sandbox.run(&["schema", "discover"], None).ok();
    sandbox.run(&["schema", "approve", "--connection", "erp"], None).ok();
    let approved = sandbox.config_json()["schemaPolicy"]["erp"]["approvedTables"].clone();
    let approved: Vec<&str> = approved.as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    assert_eq!(approved.len(), 6, "every table and view: {approved:?}");
    assert!(approved.contains(&"customers") && approved.contains(&"invoices"), "{approved:?}");

    let out =
        sandbox.run(&["schema", "approve", "--connection", "erp", "--tables", "customers,orders"], None).ok();
    assert!(out.stdout.contains("2 table(s) approved"), "{out:?}");
    assert_eq!(
        sandbox.config_json()["schemaPolicy"]["erp"]["approvedTables"],
        json!(["customers", "orders"])
    );
    let visible = sandbox.run(&["schema", "show", "--visible", "--json"], None).ok().json();
    let names: Vec<&str> = visible["schemas"][0]["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["customers", "orders"]);
    let full = sandbox.run(&["schema", "show", "--json"], None).ok().json();
    assert_eq!(table(&full["schemas"][0], "products").unwrap()["approved"], false);

    // A table the discovery does not know is refused; the config keeps the old list.
    let out =
        sandbox.run(&["schema", "approve", "--connection", "erp", "--tables", "customers,nosuch"], None);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("nosuch"), "{out:?}");
    assert_eq!(
        sandbox.config_json()["schemaPolicy"]["erp"]["approvedTables"],
        json!(["customers", "orders"])
    );

    sandbox.run(&["schema", "approve", "--connection", "erp", "--clear"], None).ok();
    assert!(sandbox.config_json().get("schemaPolicy").is_none(), "{}", sandbox.config_json());
}

#[test]
fn diff_exits_0_when_identical_and_1_when_the_schema_changed() {
    let sandbox = erp_sandbox("schema-diff");
    let out = sandbox.run(&["schema", "diff"], None);
    assert_eq!(out.code, Some(2), "no saved copy yet: {out:?}");
    assert!(out.stderr.contains("schema discover"), "{out:?}");

    sandbox.run(&["schema", "discover"], None).ok();
    let out = sandbox.run(&["schema", "diff"], None).ok();
    assert!(out.stdout.contains("no change"), "{out:?}");
    let out = sandbox.run(&["schema", "diff", "--connection", "erp", "--json"], None).ok().json();
    assert_eq!(out["connections"][0]["name"], "erp");
    assert_eq!(out["connections"][0]["identical"], true);
    assert_eq!(out["connections"][0]["diff"]["addedTables"], json!([]));

    // Make the saved copy older than the database: one table less, one column less.
    let file = sandbox.path("etc/schema/erp.json");
    let mut saved: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let tables = saved["tables"].as_array_mut().unwrap();
    tables.retain(|t| t["name"] != "invoices");
    let customers = tables.iter_mut().find(|t| t["name"] == "customers").unwrap();
    customers["columns"].as_array_mut().unwrap().retain(|c| c["name"] != "email");
    std::fs::write(&file, serde_json::to_vec(&saved).unwrap()).unwrap();

    let out = sandbox.run(&["schema", "diff"], None);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stdout.contains("+ table invoices"), "{out:?}");
    assert!(out.stdout.contains("+ column email"), "{out:?}");
    let out = sandbox.run(&["schema", "diff", "--json"], None);
    assert_eq!(out.code, Some(1), "{out:?}");
    let out = out.json();
    assert_eq!(out["connections"][0]["identical"], false);
    assert_eq!(out["connections"][0]["diff"]["addedTables"], json!(["invoices"]));
    assert_eq!(out["connections"][0]["diff"]["changedTables"][0]["addedColumns"], json!(["email"]));
    // diff does not touch the saved copy; discover replaces it.
    assert_eq!(serde_json::from_slice::<Value>(&std::fs::read(&file).unwrap()).unwrap(), saved);
    sandbox.run(&["schema", "discover"], None).ok();
    sandbox.run(&["schema", "diff"], None).ok();
}

#[test]
fn an_unknown_connection_is_exit_2_for_every_verb() {
    let sandbox = erp_sandbox("schema-unknown");
    for args in [
        &["schema", "discover", "--connection", "nope"][..],
        &["schema", "show", "--connection", "nope"],
        &["schema", "diff", "--connection", "nope"],
        &["schema", "approve", "--connection", "nope"],
        &["schema", "private", "add", "--connection", "nope", "--table", "customers"],
        &["schema", "private", "remove", "--connection", "nope", "--column", "customers.email"],
    ] {
        let out = sandbox.run(args, None);
        assert_eq!(out.code, Some(2), "{args:?}: {out:?}");
        assert!(out.stderr.contains("unknown connection `nope`"), "{args:?}: {out:?}");
        assert!(out.stderr.contains("configured: erp"), "{args:?}: {out:?}");
    }
    assert!(sandbox.config_json().get("schemaPolicy").is_none());
    assert!(!sandbox.path("etc/schema").exists());
}
