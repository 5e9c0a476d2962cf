// Package experiments holds qshield's measurement commands, one file per
// experiment, each a function returning an experiment.Spec; All lists them for
// `qshield experiment`.
package experiments

import "github.com/qshield/qshield/experiment"

// All returns every experiment.
func All() []experiment.Spec {
	return []experiment.Spec{
		FingerprintExperiment(),
		QMSPExperiment(),
		ChargingExperiment(),
		ChargingServeExperiment(),
		BioQRExperiment(),
		SelfVerifyExperiment(),
		WatermarkExperiment(),
		LedgerExperiment(HTTPSTarget()),
		LedgerGrowthExperiment(),
		KMEExperiment(),
		QKDRateExperiment(),
		QKDCascadeExperiment(),
		QKDWANExperiment(),
		QKDEveExperiment(),
		OverloadExperiment(),
		ClusterExperiment(),
		SoakExperiment(),
	}
}
