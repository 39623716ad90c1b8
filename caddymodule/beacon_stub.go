package caddymodule

import "time"

type beaconPageView struct {
	Timestamp time.Time
	URL       string
	SpaceID   string
	PageID    string
	Referrer  string
}

func parseBeacon(body []byte) ([]beaconPageView, error) { return nil, nil }
func filterBeaconPageViews(views []beaconPageView, now time.Time) ([]beaconPageView, int) {
	return views, 0
}
