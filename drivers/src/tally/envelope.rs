//! Request envelopes for TallyPrime's XML gateway: exports only.
//!
//! [`ExportEnvelope`] is the only request body the driver can send, and its only constructor
//! takes a [`CollectionExport`]: the header it writes is a fixed `<TALLYREQUEST>Export`, and
//! everything that comes from a plan or the configuration is XML-escaped text, so no input can
//! turn it into an `Import` (or add a second header).

use std::fmt::Write as _;

/// The collection and filter names the inline TDL defines.
const COLLECTION_ID: &str = "MiniConnectorExport";
const FILTER_ID: &str = "MiniConnectorFilter";

/// One collection export: the objects of one Tally type, with the fields to fetch and an
/// optional filter formula.
#[derive(Debug, Clone)]
pub(super) struct CollectionExport<'a> {
    /// Tally object type (`Ledger`, `Group`, `StockItem`, `Voucher`, `Company`).
    pub(super) collection: &'a str,
    /// Field names for `<FETCH>`.
    pub(super) fetch: Vec<&'a str>,
    /// TDL filter formula (the gate's `tdl`); `None` exports every object.
    pub(super) tdl: Option<&'a str>,
}

/// The body of one request: always an Export (see the module documentation).
#[derive(Debug, Clone)]
pub(super) struct ExportEnvelope(String);

impl ExportEnvelope {
    /// The envelope exporting `export` from `company` (`None`: the company loaded in Tally).
    pub(super) fn collection(export: &CollectionExport<'_>, company: Option<&str>) -> Self {
        let mut xml = String::with_capacity(1024);
        xml.push_str("<ENVELOPE><HEADER><VERSION>1</VERSION><TALLYREQUEST>Export</TALLYREQUEST>");
        xml.push_str("<TYPE>Collection</TYPE><ID>");
        xml.push_str(COLLECTION_ID);
        xml.push_str("</ID></HEADER><BODY><DESC><STATICVARIABLES>");
        xml.push_str("<SVEXPORTFORMAT>$$SysName:XML</SVEXPORTFORMAT>");
        if let Some(company) = company {
            let _ = write!(xml, "<SVCURRENTCOMPANY>{}</SVCURRENTCOMPANY>", escape(company));
        }
        xml.push_str("</STATICVARIABLES><TDL><TDLMESSAGE>");
        let _ = write!(
            xml,
            "<COLLECTION NAME=\"{COLLECTION_ID}\" ISMODIFY=\"No\"><TYPE>{}</TYPE>",
            escape(export.collection)
        );
        if !export.fetch.is_empty() {
            let _ = write!(xml, "<FETCH>{}</FETCH>", escape(&export.fetch.join(", ")));
        }
        if export.tdl.is_some() {
            let _ = write!(xml, "<FILTER>{FILTER_ID}</FILTER>");
        }
        xml.push_str("</COLLECTION>");
        if let Some(tdl) = export.tdl {
            let _ = write!(xml, "<SYSTEM TYPE=\"Formulae\" NAME=\"{FILTER_ID}\">{}</SYSTEM>", escape(tdl));
        }
        xml.push_str("</TDLMESSAGE></TDL></DESC></BODY></ENVELOPE>");
        Self(xml)
    }

    /// The XML text (UTF-8).
    pub(super) fn as_str(&self) -> &str {
        &self.0
    }
}

/// XML-escapes text for an element or a double-quoted attribute. Characters XML 1.0 cannot
/// carry (controls other than tab, line feed and carriage return) become U+FFFD.
pub(super) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if c.is_control() || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hostile() -> Vec<&'static str> {
        vec![
            "Sample Traders & Co",
            "</TALLYREQUEST><TALLYREQUEST>Import</TALLYREQUEST>",
            "<![CDATA[x]]>",
            "]]>\"'<&>",
            "Müller GmbH",
            "श्री गणेश ट्रेडर्स",
            "株式会社\u{0}\u{7}",
        ]
    }

    #[test]
    fn every_envelope_is_an_export_and_never_an_import() {
        for collection in ["Ledger", "Group", "StockItem", "Voucher", "Company"] {
            for text in hostile() {
                for company in [None, Some(text)] {
                    for tdl in [None, Some("$Parent = \"Sundry Debtors\""), Some(text)] {
                        let export = CollectionExport { collection, fetch: vec!["Name", text], tdl };
                        let xml = ExportEnvelope::collection(&export, company);
                        let xml = xml.as_str();
                        assert_eq!(xml.matches("<TALLYREQUEST>").count(), 1, "{xml}");
                        assert!(xml.contains("<TALLYREQUEST>Export</TALLYREQUEST>"), "{xml}");
                        assert!(!xml.contains("<TALLYREQUEST>Import"), "{xml}");
                        assert!(!xml.to_ascii_lowercase().contains(">import<"), "{xml}");
                        assert_eq!(xml.matches("<HEADER>").count(), 1, "{xml}");
                        assert!(!xml.contains('\u{0}') && !xml.contains('\u{7}'), "{xml}");
                        assert!(!xml.contains("<![CDATA["), "{xml}");
                    }
                }
            }
        }
    }

    #[test]
    fn company_and_formula_are_escaped() {
        let export = CollectionExport {
            collection: "Ledger",
            fetch: vec!["Name", "ClosingBalance"],
            tdl: Some("($ClosingBalance > 1000) AND ($Parent <> \"A & B\")"),
        };
        let xml = ExportEnvelope::collection(&export, Some("R&D <India> \"Ltd\""));
        let xml = xml.as_str();
        assert!(xml.contains("<SVCURRENTCOMPANY>R&amp;D &lt;India&gt; &quot;Ltd&quot;</SVCURRENTCOMPANY>"));
        assert!(xml.contains("<TYPE>Ledger</TYPE><FETCH>Name, ClosingBalance</FETCH>"));
        assert!(xml.contains(
            "NAME=\"MiniConnectorFilter\">($ClosingBalance &gt; 1000) AND ($Parent &lt;&gt; &quot;A &amp; B&quot;)</SYSTEM>"
        ));
        let plain = ExportEnvelope::collection(&CollectionExport { tdl: None, ..export }, None);
        assert!(!plain.as_str().contains("SVCURRENTCOMPANY"));
        assert!(!plain.as_str().contains("<FILTER>"));
    }
}
