extension FixedWidthInteger {
    /// `value` rounded toward zero and clamped to this type's range; NaN gives 0. Swift's `Int(x)`
    /// traps on a Double that does not fit, and one trap ends every call in the process.
    @inlinable
    public init(saturating value: Double) {
        if value.isNaN {
            self = 0
        } else if value <= Double(Self.min) {
            self = .min
        } else if value >= Double(Self.max) {
            // Double(Self.max) may round up past the maximum (2^63 for Int64): anything that high is the maximum.
            self = .max
        } else {
            self = Self(value)
        }
    }
}
