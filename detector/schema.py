"""Column names and Kusto types of the two tables (Azure Monitor table reference).

Used to write exports (the sample, benchmarks), to answer as the Log Analytics fake, and to check
KQL with the Kusto language service. The correlation itself needs only ``model.*_COLUMNS``.
"""

from __future__ import annotations

AZURE_ACTIVITY: tuple[tuple[str, str], ...] = (
    ("TenantId", "string"),
    ("SourceSystem", "string"),
    ("CallerIpAddress", "string"),
    ("CategoryValue", "string"),
    ("CorrelationId", "string"),
    ("Authorization", "string"),
    ("Authorization_d", "dynamic"),
    ("Claims", "string"),
    ("Claims_d", "dynamic"),
    ("Level", "string"),
    ("OperationNameValue", "string"),
    ("Properties", "string"),
    ("Properties_d", "dynamic"),
    ("Caller", "string"),
    ("EventDataId", "string"),
    ("EventSubmissionTimestamp", "datetime"),
    ("HTTPRequest", "string"),
    ("OperationId", "string"),
    ("ResourceGroup", "string"),
    ("ResourceProviderValue", "string"),
    ("ActivityStatusValue", "string"),
    ("ActivitySubstatusValue", "string"),
    ("Hierarchy", "string"),
    ("TimeGenerated", "datetime"),
    ("SubscriptionId", "string"),
    ("OperationName", "string"),
    ("ActivityStatus", "string"),
    ("ActivitySubstatus", "string"),
    ("Category", "string"),
    ("ResourceId", "string"),
    ("ResourceProvider", "string"),
    ("Resource", "string"),
    ("Type", "string"),
    ("_ResourceId", "string"),
)

BEHAVIOR_ANALYTICS: tuple[tuple[str, str], ...] = (
    ("TenantId", "string"),
    ("SourceRecordId", "string"),
    ("TimeGenerated", "datetime"),
    ("TimeProcessed", "datetime"),
    ("ActivityType", "string"),
    ("ActionType", "string"),
    ("UserName", "string"),
    ("UserPrincipalName", "string"),
    ("EventSource", "string"),
    ("SourceIPAddress", "string"),
    ("SourceIPLocation", "string"),
    ("SourceDevice", "string"),
    ("DestinationIPAddress", "string"),
    ("DestinationIPLocation", "string"),
    ("DestinationDevice", "string"),
    ("EventVendor", "string"),
    ("EventProductVersion", "string"),
    ("ActorName", "string"),
    ("ActorPrincipalName", "string"),
    ("TargetName", "string"),
    ("TargetPrincipalName", "string"),
    ("Device", "string"),
    ("UsersInsights", "dynamic"),
    ("DevicesInsights", "dynamic"),
    ("ActivityInsights", "dynamic"),
    ("InvestigationPriority", "int"),
    ("NativeTableName", "string"),
    ("SourceSystem", "string"),
    ("Type", "string"),
)

TABLES: dict[str, tuple[tuple[str, str], ...]] = {
    "AzureActivity": AZURE_ACTIVITY,
    "BehaviorAnalytics": BEHAVIOR_ANALYTICS,
}
