//! Int-or-percent values (`maxSurge: 25%`, `maxUnavailable: 1`) resolved against a total, with
//! Kubernetes' rounding (`intstr.GetScaledValueFromIntOrPercent`) and its fencepost rule.

use serde_json::Value;

/// Resolves `v` against `total`: an integer is itself; `"N%"` is `total * N / 100`, rounded up
/// or down. Absent (`None`/null) resolves to `default`.
pub fn scaled(v: Option<&Value>, total: i64, round_up: bool, default: i64) -> Result<i64, String> {
    match v {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Number(n)) => n
            .as_i64()
            .ok_or_else(|| format!("invalid value {n}: must be an integer")),
        Some(Value::String(s)) => {
            let pct = s
                .strip_suffix('%')
                .and_then(|p| p.parse::<i64>().ok())
                .ok_or_else(|| {
                    format!("invalid value {s:?}: must be an integer or a percentage")
                })?;
            let scaled = total * pct;
            Ok(if round_up {
                (scaled + 99).div_euclid(100)
            } else {
                scaled.div_euclid(100)
            })
        }
        Some(other) => Err(format!(
            "invalid value {other}: must be an integer or a percentage"
        )),
    }
}

/// `(maxSurge, maxUnavailable)` for `desired` replicas, as `deploymentutil.ResolveFenceposts`:
/// surge rounds up, unavailability down, and both zero means one may be unavailable so that a
/// rollout can move at all.
pub fn fenceposts(
    max_surge: Option<&Value>,
    max_unavailable: Option<&Value>,
    desired: i64,
) -> Result<(i64, i64), String> {
    let surge = scaled(max_surge, desired, true, 0).map_err(|e| format!("maxSurge: {e}"))?;
    let unavailable =
        scaled(max_unavailable, desired, false, 0).map_err(|e| format!("maxUnavailable: {e}"))?;
    if surge == 0 && unavailable == 0 {
        return Ok((0, 1));
    }
    Ok((surge, unavailable))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn percentages_round_as_kubernetes() {
        let p = json!("25%");
        assert_eq!(scaled(Some(&p), 10, true, 0), Ok(3));
        assert_eq!(scaled(Some(&p), 10, false, 0), Ok(2));
        assert_eq!(scaled(Some(&json!("100%")), 7, false, 0), Ok(7));
        assert_eq!(scaled(Some(&json!(2)), 10, true, 0), Ok(2));
        assert_eq!(scaled(None, 10, true, 5), Ok(5));
        assert!(scaled(Some(&json!("x%")), 10, true, 0).is_err());
        assert!(scaled(Some(&json!(true)), 10, true, 0).is_err());
    }

    #[test]
    fn fenceposts_never_both_zero() {
        // 25%/25% of 3: surge rounds up to 1, unavailable down to 0.
        assert_eq!(
            fenceposts(Some(&json!("25%")), Some(&json!("25%")), 3),
            Ok((1, 0))
        );
        assert_eq!(fenceposts(Some(&json!(0)), Some(&json!(0)), 3), Ok((0, 1)));
        assert_eq!(
            fenceposts(Some(&json!("10%")), Some(&json!("10%")), 1),
            Ok((1, 0))
        );
    }
}
