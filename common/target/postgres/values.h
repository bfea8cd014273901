#pragma once
// PostgreSQL values, as the server sends them in text form, to the result's JSON. The session
// is set up so that the text is predictable (pg_target.cpp): DateStyle ISO, IntervalStyle
// iso_8601, TimeZone UTC, bytea_output hex, extra_float_digits 1.
//
//   smallint, integer, bigint, oid   JSON integers
//   real, double precision           JSON numbers; NaN and ±Infinity as the strings "NaN", ...
//   numeric                          a JSON string of its exact digits ("1234.50"): JSON readers
//                                    keep a number as a double, which would lose digits
//   boolean                          true / false
//   json, jsonb                      the JSON value itself
//   bytea                            {"blob_hex": "00ff"}, as SQLite's blobs
//   timestamp                        "2025-01-31T12:34:56.789" (ISO 8601)
//   timestamptz                      "2025-01-31T12:34:56.789+00:00" (in UTC)
//   time, timetz, date               "12:34:56", "12:34:56+02:00", "2025-01-31"
//   interval                         ISO 8601 duration, "P1Y2M3DT4H5M6S"
//   arrays of the types above        JSON arrays (nested for several dimensions), elements as
//                                    above; NULL elements as null
//   anything else (text, varchar, uuid, enum, money, xml, ranges, geometry, ...)  its text
#include <cstdint>
#include <optional>
#include <string_view>

#include <nlohmann/json.hpp>

#include "target/row_encoder.h"

namespace sqlq::pg {

using TypeOid = unsigned int;

// Appends one non-null value of type `oid`, in text form, to the row being encoded.
void encode_value(RowEncoder& rows, TypeOid oid, std::string_view text);

// The same value as JSON (what encode_value stores).
nlohmann::json value_json(TypeOid oid, std::string_view text);

// An array's text form ("{1,2,NULL}", "{{a,b},{c,d}}", "[0:1]={1,2}") as a JSON array whose
// elements are of type `element`; nullopt when the text is not an array literal.
std::optional<nlohmann::json> parse_array(std::string_view text, TypeOid element);

// The element type of a known array type, or 0.
TypeOid array_element(TypeOid array_oid);

}  // namespace sqlq::pg
