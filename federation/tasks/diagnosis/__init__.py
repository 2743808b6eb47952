"""Open differential diagnosis: likelihood-ratio evidence, case profiles the sites share, a disease-agnostic scorer trained by FedAvg."""
