// Package fingerprint reads and writes ISO/IEC 19794-2:2005 finger minutiae
// records and compares them with a minutiae matcher built for verification
// (1:1) at over ten thousand comparisons per second on one core.
//
// # Templates
//
// ParseISO decodes one record into a Template and refuses, with an error
// wrapping ErrFormat, anything that is not exactly one well-formed record:
// truncated headers, a total length field that disagrees with the data, a
// minutiae count or extended data length that overruns the record, reserved
// bits set, out-of-range values, trailing bytes. (An open-source matcher
// crashed on an overrunning minutiae count; here every length is checked
// before it is used, and the parser is fuzzed.) Template.MarshalISO encodes a
// template; a parsed record round-trips byte for byte.
//
// # Matcher
//
// The matcher is a pairing-graph matcher on minutiae edges with global
// consolidation, in three steps, all of them rotation and translation
// invariant by construction:
//
//  1. Prepare (once per template): every minutia is linked to its Neighbours
//     nearest neighbours (symmetrised). Each directed edge i→j is described by
//     its length and the two minutia directions measured against the edge
//     direction — quantities a rigid motion does not change. The shortest
//     (VoteNeighbours) edges are also indexed by angle bin and length.
//  2. Voting (per comparison): each edge of one template is compared with the
//     edges of the other of similar length and first angle (index lookup,
//     sliding windows); every compatible edge pair votes for the two minutia
//     pairs it implies. The Roots best-voted minutia pairs seed step 3.
//  3. Growing and consolidation: from each root the pairing graph grows
//     best-first along compatible edges (the cheapest edge pair leaving the
//     paired set is taken next), so only local geometry is compared and
//     elastic distortion, which bends the print smoothly, is tolerated. Edges
//     between already paired minutiae that agree in both templates count as
//     support. Local growth alone lets an impostor comparison chain loosely
//     compatible edges across a whole print, so each graph is then checked
//     globally: pairs that lie farther than GlobalTol + GlobalTolRel·r pixels
//     (r: distance from the pairs' centroid, as distortion grows outwards), or
//     turn by more than GlobalAngleTol, from the least-squares rigid alignment
//     of all pairs are dropped (one refit), and pairs and support edges are
//     recounted.
//
// The largest consolidated graph wins. Its score is
//
//	(pairs + support)² / sqrt(max(overA,12)·max(overB,12)·nA·nB)
//
// where overA (overB) counts the minutiae of one template that fall inside the
// other's convex hull (widened by HullMargin) after alignment. Normalising by
// the minutiae in the common area keeps partial overlaps from being punished
// for minutiae that could not have matched; mixing in the totals nA·nB and
// flooring the overlap keep a tiny overlap with a few chance pairs from
// scoring high. Scores are ≥ 0 and not bounded by 1; genuine comparisons of
// FVC2002 typically score 1–5, impostors below 0.5.
//
// Score does not allocate (scratch memory comes from a per-Matcher pool), works
// with float32 coordinates and byte-quantised angles, and is safe for
// concurrent use.
//
// # Parameters and threshold
//
// DefaultParams were chosen once, with the same values for all four FVC2002
// databases (never per database), by varying one parameter at a time around a
// hand-picked start and keeping values in the middle of flat regions of the
// mean-EER curve. Of some forty single-parameter variations tried (tolerances,
// neighbour counts, roots, edge-length limits, hull margin, score variants),
// all but the most drastic (e.g. 5 neighbours instead of 8) stayed within
// about ±0.4 percentage points of the chosen setting — about one genuine
// comparison of one database (0.36 points) — so the figures are not the
// product of fine-tuning to these 320 records. Measured with the defaults
// (all genuine and impostor pairs, see package fvc): EER 1.43% / 1.22% /
// 5.36% / 1.43% on DB1–DB4, mean 2.36% (OpenAFIS on the same templates:
// 8.9%); about 35,000 comparisons per CPU-second on one core.
//
// DefaultThreshold (0.80) comes from the pooled scores of FVC2002 DB1–DB4
// (11,520 impostor comparisons: all impressions of different fingers; 1,120
// genuine): the lowest threshold with pooled FMR ≤ 0.1% was 0.73, rounded up
// to 0.80 for margin, where the pooled FMR is about 0.06% and the pooled FNMR
// about 7%. `qshield experiment fingerprint` recomputes both and shows the
// operating point per database. Scores of the same template pair are exactly
// symmetric (Score(a, b) == Score(b, a)). With only 11,520 impostor comparisons an FMR of 0.1% rests on
// about a dozen scores: applications that need a tighter bound should choose
// a higher threshold from a larger impostor set.
//
// # Synthetic fingers
//
// Synthetic and Distort generate deterministic synthetic masters and distorted
// impressions (rotation, translation, elastic distortion, noise, missed and
// spurious minutiae, cropping) for tests and demos when the shared FVC data is
// absent. They use a seeded math/rand/v2 generator for reproducibility; they
// produce test data, never secrets.
//
// Subpackage eval computes EER, FMR100, FMR1000, ZeroFMR, DET and ROC from score
// lists; subpackage fvc loads FVC databases and runs the protocol.
package fingerprint
