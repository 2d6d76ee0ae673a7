//! Bounds on calls whose cost is set by a constant argument.
//!
//! | call | refused when |
//! |------|--------------|
//! | `repeat(s, n)`, `replicate(s, n)` (T-SQL) | `len(s) * n` > [`MAX_RESULT_BYTES`]; with `s` not constant, `n` > [`MAX_RESULT_BYTES`] |
//! | `lpad(s, n, ..)`, `rpad(s, n, ..)` (and MariaDB's `*_oracle`) | `n` > [`MAX_RESULT_BYTES`] |
//! | `space(n)`, `randomblob(n)`, `zeroblob(n)` | `n` > [`MAX_RESULT_BYTES`] |
//! | `concat(..)` of constant-length parts | the sum > [`MAX_RESULT_BYTES`] |
//! | `generate_series(a, b [, step])` with integer bounds | more than [`MAX_SERIES_ROWS`] rows |
//!
//! "Constant" means a number or string literal, or an expression of them: unary minus, `+ - * /`
//! on integers, `||` on strings, parentheses, casts, and the calls above (so nesting
//! `repeat(repeat('x', 1000), 1000000)` is measured as a whole). Lengths are counted in bytes of
//! the literal and characters of the requested length alike. Anything else (a column, a
//! parameter, another function) makes the size unknown, and the call is left to the database's
//! own limits and to the agent's result-size cap. Series over dates or timestamps are not
//! measured.

use sqlparser::ast::{
    BinaryOperator, Expr, Function, FunctionArg, FunctionArgExpr, FunctionArguments, ObjectName,
    UnaryOperator, Value,
};

/// The largest result, in bytes (or characters), a call with constant arguments may ask for:
/// 1 MiB.
pub const MAX_RESULT_BYTES: u128 = 1 << 20;

/// The most rows `generate_series` with constant integer bounds may yield: 10,000,000.
pub const MAX_SERIES_ROWS: u128 = 10_000_000;

/// A constant's value as far as cost goes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Const {
    Int(i128),
    /// A string or binary value of this length.
    Str(u128),
}

/// The functions measured here, lower case.
const MEASURED: [&str; 11] = [
    "concat",
    "generate_series",
    "lpad",
    "lpad_oracle",
    "randomblob",
    "repeat",
    "replicate",
    "rpad",
    "rpad_oracle",
    "space",
    "zeroblob",
];

/// The measured function `name` calls (by its last part, any case), if any. No allocation:
/// this runs for every call in every query.
fn name_lower(name: &ObjectName) -> Option<&'static str> {
    let last = &name.0.last()?.as_ident()?.value;
    MEASURED.iter().copied().find(|m| m.len() == last.len() && m.eq_ignore_ascii_case(last))
}

fn list_args(f: &Function) -> &[FunctionArg] {
    match &f.args {
        FunctionArguments::List(list) => &list.args,
        _ => &[],
    }
}

fn exprs(args: &[FunctionArg]) -> Vec<&Expr> {
    args.iter()
        .filter_map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e))
            | FunctionArg::Named { arg: FunctionArgExpr::Expr(e), .. }
            | FunctionArg::ExprNamed { arg: FunctionArgExpr::Expr(e), .. } => Some(e),
            _ => None,
        })
        .collect()
}

fn int(e: Option<&&Expr>) -> Option<i128> {
    match eval(e?)? {
        Const::Int(n) => Some(n),
        Const::Str(_) => None,
    }
}

fn len(e: Option<&&Expr>) -> Option<u128> {
    match eval(e?)? {
        Const::Str(n) => Some(n),
        // A number used as a string: its digits.
        Const::Int(n) => Some(n.unsigned_abs().checked_ilog10().unwrap_or(0) as u128 + 2),
    }
}

fn count(n: i128) -> u128 {
    n.max(0) as u128
}

/// The value of a constant expression, or `None` when it is not constant.
fn eval(e: &Expr) -> Option<Const> {
    match e {
        Expr::Value(v) => match &v.value {
            Value::Number(s, _) => {
                let whole = s.split(['.', 'e', 'E']).next().unwrap_or(s);
                if s.contains(['e', 'E']) {
                    // 1e9: an integer as far as cost goes.
                    let f: f64 = s.parse().ok()?;
                    Some(Const::Int(if f.abs() < 1e30 { f as i128 } else { i128::MAX }))
                } else {
                    whole.parse::<i128>().ok().or(Some(i128::MAX)).map(Const::Int)
                }
            }
            Value::Null | Value::Boolean(_) | Value::Placeholder(_) => None,
            other => other.clone().into_string().map(|s| Const::Str(s.len() as u128)),
        },
        Expr::Nested(inner) | Expr::Cast { expr: inner, .. } => eval(inner),
        Expr::UnaryOp { op: UnaryOperator::Minus, expr } => match eval(expr)? {
            Const::Int(n) => Some(Const::Int(n.checked_neg()?)),
            Const::Str(_) => None,
        },
        Expr::UnaryOp { op: UnaryOperator::Plus, expr } => eval(expr),
        Expr::BinaryOp { left, op, right } => {
            let (l, r) = (eval(left)?, eval(right)?);
            match (l, op, r) {
                (Const::Int(a), BinaryOperator::Plus, Const::Int(b)) => Some(Const::Int(a.saturating_add(b))),
                (Const::Int(a), BinaryOperator::Minus, Const::Int(b)) => {
                    Some(Const::Int(a.saturating_sub(b)))
                }
                (Const::Int(a), BinaryOperator::Multiply, Const::Int(b)) => {
                    Some(Const::Int(a.saturating_mul(b)))
                }
                (Const::Int(a), BinaryOperator::Divide, Const::Int(b)) => a.checked_div(b).map(Const::Int),
                (Const::Str(a), BinaryOperator::StringConcat, Const::Str(b)) => {
                    Some(Const::Str(a.saturating_add(b)))
                }
                _ => None,
            }
        }
        Expr::Function(f) => call(&f.name, list_args(f)),
        _ => None,
    }
}

/// The size of a call's result, when its arguments are constant and the function is measured.
fn call(name: &ObjectName, args: &[FunctionArg]) -> Option<Const> {
    let name = name_lower(name)?;
    let a = exprs(args);
    match name {
        "repeat" | "replicate" => {
            let n = count(int(a.get(1))?);
            Some(Const::Str(len(a.first()).unwrap_or(1).saturating_mul(n)))
        }
        "lpad" | "rpad" | "lpad_oracle" | "rpad_oracle" => Some(Const::Str(count(int(a.get(1))?))),
        "space" | "randomblob" | "zeroblob" => Some(Const::Str(count(int(a.first())?))),
        "concat" => {
            let mut total: u128 = 0;
            for e in &a {
                total = total.saturating_add(len(Some(e))?);
            }
            Some(Const::Str(total))
        }
        _ => None,
    }
}

/// Why the call `f` is too expensive to run, if it is (see the module documentation).
pub(crate) fn check(f: &Function) -> Result<(), String> {
    check_call(&f.name, list_args(f))
}

/// [`check`] for a call in FROM (`generate_series(1, 10) AS s`).
pub(crate) fn check_call(name: &ObjectName, args: &[FunctionArg]) -> Result<(), String> {
    let Some(lower) = name_lower(name) else { return Ok(()) };
    if lower == "generate_series" {
        let a = exprs(args);
        let (Some(start), Some(stop)) = (int(a.first()), int(a.get(1))) else { return Ok(()) };
        let step = match a.get(2) {
            Some(e) => match int(Some(e)) {
                Some(s) => s,
                None => return Ok(()),
            },
            None => 1,
        };
        let rows = match step {
            0 => return Ok(()), // the server refuses a zero step
            s if s > 0 => count(stop.saturating_sub(start)) / s.unsigned_abs() + 1,
            s => count(start.saturating_sub(stop)) / s.unsigned_abs() + 1,
        };
        if rows > MAX_SERIES_ROWS {
            return Err(format!(
                "{name} would produce {rows} rows; at most {MAX_SERIES_ROWS} are allowed with constant bounds"
            ));
        }
        return Ok(());
    }
    if let Some(Const::Str(n)) = call(name, args)
        && n > MAX_RESULT_BYTES
    {
        return Err(format!(
            "{name} would build a value of {n} bytes; at most {MAX_RESULT_BYTES} are allowed with \
             constant arguments"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::parser::Parser;

    fn verdict(expr: &str) -> Result<(), String> {
        let e = Parser::new(&PostgreSqlDialect {}).try_with_sql(expr).unwrap().parse_expr().unwrap();
        let Expr::Function(f) = e else { panic!("{expr} is not a call") };
        check(&f)
    }

    #[test]
    fn measured_names_are_sorted_lower_case() {
        for pair in MEASURED.windows(2) {
            assert!(pair[0] < pair[1]);
        }
        assert!(MEASURED.iter().all(|m| *m == m.to_ascii_lowercase()));
    }

    #[test]
    fn bounds_and_unknowns() {
        assert!(verdict("repeat('x', 1048576)").is_ok());
        assert!(verdict("repeat('xy', 1048576)").is_err());
        assert!(verdict("REPEAT('x', 99999999999999999999999999999999999999999)").is_err(), "huge literal");
        assert!(verdict("repeat('x', -5)").is_ok());
        assert!(verdict("repeat('x', 2.5e6)").is_err(), "exponent notation");
        assert!(verdict("repeat('x', (1 << 30))").is_ok(), "shift is not evaluated: unknown size");
        assert!(verdict("repeat('x', n)").is_ok(), "not constant");
        assert!(verdict("lpad('x', 1024 * 1024 + 1)").is_err());
        assert!(verdict("lpad('x', -1)").is_ok());
        assert!(verdict("generate_series(1, 10000000)").is_ok());
        assert!(verdict("generate_series(0, 10000000)").is_err());
        assert!(verdict("generate_series(1, 100000000, 10)").is_ok());
        assert!(verdict("generate_series(1, 100000000, 0)").is_ok(), "the server refuses a zero step");
        assert!(verdict("generate_series(-9223372036854775808, 9223372036854775807)").is_err());
        assert!(
            verdict("generate_series(now(), now() + interval '1 year', '1 second')").is_ok(),
            "not measured"
        );
        assert!(verdict("concat('a', repeat('b', 1048576))").is_err());
        assert!(verdict("concat('a', name)").is_ok());
        let err = verdict("zeroblob(2000000)").unwrap_err();
        assert_eq!(
            err,
            "zeroblob would build a value of 2000000 bytes; at most 1048576 are allowed with constant arguments"
        );
    }
}
