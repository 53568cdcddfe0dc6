"""The attributes dcm_anon keeps although Table E.1-1 does not list them: an allow-list.

PS3.15 E.1 asks a de-identifier to remove "all other" attributes that could
identify, and a denylist cannot know every attribute of the standard, or of
a vendor: an attribute the table does not list is removed unless it is here.
What is here is what a CT series needs to be an image again, by module of
PS3.3 (the module's section in the comment), and nothing that holds text a
person typed: numbers, coded strings with defined terms (CS), UIDs (mapped,
see below), and the code items (CodeValue, CodingSchemeDesignator,
CodeMeaning) of the coded sequences kept here.

Attributes the table does list get the table's action (and each option's
column), whether or not they are here; a sequence kept by either rule has
its items judged by the same rules, at every depth. UIDs here that name an
instance are mapped like the table's U; UIDs that name a type (a SOP class)
are kept only when they are one of DICOM's own, else mapped.

Two free-text attributes are kept, as E.1-1 does for the acquisition:
ConvolutionKernel and FilterType (SH), which carry the vendor's kernel and
filter names ("B30f", "BODY FILTER"). They are short strings the scanner
writes, not text a person types; the rule is written here so that it can be
argued with.
"""

from __future__ import annotations

from pydicom.datadict import tag_for_keyword

SAFE_KEYWORDS: dict[str, tuple[str, ...]] = {
    # C.12.1 SOP Common (the UIDs are in the table or mapped)
    "SOP Common": ("SOPClassUID", "SpecificCharacterSet", "InstanceNumber"),
    # C.7.3.1 General Series (identity of the series, not of the patient)
    "General Series": ("Modality", "SeriesNumber", "Laterality", "PatientPosition", "AnatomicalOrientationType",
                       "SmallestPixelValueInSeries", "LargestPixelValueInSeries"),
    # C.7.6.1 General Image; C.7.6.16 Multi-frame references by UID only
    "General Image": ("ImageType", "PatientOrientation", "AcquisitionNumber", "ImagesInAcquisition",
                      "BurnedInAnnotation", "RecognizableVisualFeatures", "LossyImageCompression",
                      "LossyImageCompressionRatio", "LossyImageCompressionMethod", "PresentationLUTShape",
                      "QualityControlImage", "ReferencedSOPClassUID", "ReferencedFrameNumber",
                      "PurposeOfReferenceCodeSequence"),
    # C.7.6.2 Image Plane
    "Image Plane": ("PixelSpacing", "ImageOrientationPatient", "ImagePositionPatient", "SliceThickness",
                    "SpacingBetweenSlices", "SliceLocation"),
    # C.7.6.3 Image Pixel; C.7.6.6 Multi-frame
    "Image Pixel": ("SamplesPerPixel", "PhotometricInterpretation", "Rows", "Columns", "BitsAllocated",
                    "BitsStored", "HighBit", "PixelRepresentation", "PlanarConfiguration", "PixelAspectRatio",
                    "SmallestImagePixelValue", "LargestImagePixelValue", "PixelPaddingValue",
                    "PixelPaddingRangeLimit", "PixelData", "FloatPixelData", "DoubleFloatPixelData",
                    "NumberOfFrames", "FrameIncrementPointer"),
    # C.8.2.1 CT Image, and the CT acquisition attributes of C.8.15.3 (Enhanced CT)
    "CT Image": ("RescaleIntercept", "RescaleSlope", "RescaleType", "KVP", "ScanOptions",
                 "DataCollectionDiameter", "DataCollectionCenterPatient", "ReconstructionDiameter",
                 "ReconstructionTargetCenterPatient", "DistanceSourceToDetector", "DistanceSourceToPatient",
                 "DistanceSourceToDataCollectionCenter", "GantryDetectorTilt", "TableHeight",
                 "TablePosition", "RotationDirection", "ExposureTime", "XRayTubeCurrent", "Exposure",
                 "ExposureInuAs", "ExposureTimeInms", "XRayTubeCurrentInmA", "ExposureInmAs",
                 "FilterType", "FilterMaterial", "GeneratorPower", "FocalSpots", "ConvolutionKernel",
                 "ConvolutionKernelGroup", "ReconstructionAlgorithm", "ReconstructionFieldOfView",
                 "ReconstructionPixelSpacing", "ReconstructionAngle", "ImageFilter", "RevolutionTime",
                 "SingleCollimationWidth", "TotalCollimationWidth", "TableSpeed", "TableFeedPerRotation",
                 "SpiralPitchFactor", "ExposureModulationType", "EstimatedDoseSaving", "CTDIvol",
                 "CTDIPhantomTypeCodeSequence", "CalciumScoringMassFactorPatient",
                 "CalciumScoringMassFactorDevice", "EnergyWeightingFactor", "WaterEquivalentDiameter",
                 "AcquisitionType", "TubeAngle", "ConstantVolumeFlag", "FluoroscopyFlag",
                 "IsocenterPosition", "MultienergyCTAcquisition"),
    # C.11.1 Modality LUT; C.11.2 VOI LUT (window values; their free-text explanations are not kept)
    "Modality and VOI LUT": ("ModalityLUTSequence", "ModalityLUTType", "LUTDescriptor", "LUTData",
                             "WindowCenter", "WindowWidth", "VOILUTFunction", "VOILUTSequence"),
    # C.7.6.16 Multi-frame Functional Groups, C.7.6.17 Multi-frame Dimension, C.8.15.3 CT functional groups
    "Enhanced CT": ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence",
                    "PixelMeasuresSequence", "PlanePositionSequence", "PlaneOrientationSequence",
                    "FrameContentSequence", "FrameAcquisitionNumber", "FrameAcquisitionDuration",
                    "DimensionIndexValues", "TemporalPositionIndex", "StackID", "InStackPositionNumber",
                    "CardiacCyclePosition", "RespiratoryCyclePosition", "PixelValueTransformationSequence",
                    "FrameVOILUTSequence", "CTImageFrameTypeSequence", "FrameType", "PixelPresentation",
                    "VolumetricProperties", "VolumeBasedCalculationTechnique", "CTAcquisitionTypeSequence",
                    "CTAcquisitionDetailsSequence", "CTTableDynamicsSequence", "CTPositionSequence",
                    "CTGeometrySequence", "CTReconstructionSequence", "CTExposureSequence",
                    "CTXRayDetailsSequence", "CTAdditionalXRaySourceSequence",
                    "IrradiationEventIdentificationSequence", "DimensionOrganizationType",
                    "DimensionOrganizationSequence", "DimensionIndexSequence", "DimensionIndexPointer",
                    "FunctionalGroupPointer", "ContentQualification", "ConcatenationFrameOffsetNumber",
                    "InConcatenationNumber", "InConcatenationTotalNumber"),
    # C.12.1 / 8.8 Code items of the coded sequences above
    "Code items": ("CodeValue", "CodingSchemeDesignator", "CodingSchemeVersion", "CodeMeaning",
                   "LongCodeValue"),
    # C.12.1 the record of de-identification (dcm_anon rewrites it, PS3.15 E.1.1)
    "De-identification record": ("PatientIdentityRemoved", "DeidentificationMethodCodeSequence",
                                 "LongitudinalTemporalInformationModified"),
}


def _tags() -> frozenset[int]:
    tags = set()
    for keywords in SAFE_KEYWORDS.values():
        for keyword in keywords:
            tag = tag_for_keyword(keyword)
            if tag is None:   # a typo here would silently drop an attribute
                raise ValueError(f"{keyword} is not a DICOM keyword")
            tags.add(tag)
    return frozenset(tags)


SAFE_TAGS = _tags()
